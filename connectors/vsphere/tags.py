"""vSphere tags through the vAPI REST endpoint (/rest/com/vmware/cis/...): pyvmomi's SOAP API has no tags.

The number of calls grows with the number of tags and categories, never with the number of VMs: every
tag's attached objects come back in one list-attached-objects-on-tags call.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from contextlib import suppress
from typing import Any

from connectors import tls
from connectors.base import BadCredentials, Endpoint, ProtocolError

REST = "/rest/com/vmware/cis"


class TagClient:
    def __init__(self, endpoint: Endpoint, port: int) -> None:
        self.endpoint = endpoint
        self.port = port
        self._session_id = ""

    def _request(self, method: str, path: str, body: Any = None, *, login: bool = False) -> Any:
        connection = http.client.HTTPSConnection(
            self.endpoint.address,
            self.port,
            timeout=self.endpoint.timeout,
            context=tls.client_context(self.endpoint),
        )
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if login:
            pair = f"{self.endpoint.username}:{self.endpoint.secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            headers["vmware-api-session-id"] = self._session_id
        try:
            connection.request(
                method, REST + path, body=None if body is None else json.dumps(body), headers=headers
            )
            response = connection.getresponse()
            payload = response.read()
        except ssl.SSLCertVerificationError as error:
            raise tls.untrusted(self.endpoint, self.port, error) from None
        except (OSError, http.client.HTTPException) as error:
            raise tls.network_error(self.endpoint, self.port, error) from None
        finally:
            connection.close()
        if response.status in (401, 403):
            raise BadCredentials(f"the tagging service of {self.endpoint.address} refused the login")
        if response.status >= 400:
            raise ProtocolError(
                f"the tagging service of {self.endpoint.address} answered {response.status} to {path}"
            )
        try:
            return json.loads(payload)["value"] if payload else None
        except (ValueError, KeyError, TypeError):
            raise ProtocolError(
                f"the tagging service of {self.endpoint.address} sent a malformed answer"
            ) from None

    def login(self) -> None:
        self._session_id = str(self._request("POST", "/session", login=True))

    def logout(self) -> None:
        if self._session_id:
            with suppress(Exception):  # best effort: the session expires on its own
                self._request("DELETE", "/session")
            self._session_id = ""

    def tags_by_object(self) -> dict[str, list[str]]:
        """Managed object id (e.g. "vm-42") -> ["category:tag", ...], sorted."""
        categories = {
            category_id: self._request("GET", f"/tagging/category/id:{category_id}")["name"]
            for category_id in self._request("GET", "/tagging/category") or []
        }
        tag_ids = self._request("GET", "/tagging/tag") or []
        names = {}
        for tag_id in tag_ids:
            tag = self._request("GET", f"/tagging/tag/id:{tag_id}")
            names[tag_id] = f"{categories.get(tag.get('category_id', ''), '')}:{tag['name']}"
        attached: dict[str, list[str]] = {}
        if not tag_ids:
            return attached
        answer = self._request(
            "POST", "/tagging/tag-association?~action=list-attached-objects-on-tags", {"tag_ids": tag_ids}
        )
        for entry in answer or []:
            for obj in entry.get("object_ids") or []:
                attached.setdefault(obj["id"], []).append(names[entry["tag_id"]])
        return {key: sorted(value) for key, value in attached.items()}

    # --- used by tests and by the console's "tag this VM" helpers --------------------------------------------
    def create_category(self, name: str) -> str:
        spec = {
            "create_spec": {
                "name": name,
                "description": "",
                "cardinality": "MULTIPLE",
                "associable_types": [],
            }
        }
        return str(self._request("POST", "/tagging/category", spec))

    def create_tag(self, category_id: str, name: str) -> str:
        spec = {"create_spec": {"name": name, "description": "", "category_id": category_id}}
        return str(self._request("POST", "/tagging/tag", spec))

    def attach(self, tag_id: str, moref_type: str, moref_id: str) -> None:
        self._request(
            "POST",
            f"/tagging/tag-association/id:{tag_id}?~action=attach",
            {"object_id": {"type": moref_type, "id": moref_id}},
        )
