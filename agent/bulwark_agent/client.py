"""Talking to the Bulwark console over HTTPS (urllib, the standard library's client)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any


class AgentError(Exception):
    """Something the operator must fix (bad token, untrusted certificate, unreachable server)."""


class Client:
    def __init__(
        self, server: str, *, ca_file: str = "", allow_http: bool = False, timeout: float = 20.0
    ) -> None:
        server = server.rstrip("/")
        if not server.startswith("https://") and not allow_http:
            raise AgentError(
                "the server address must start with https:// (an agent key never travels in clear)"
            )
        self.server = server
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=ca_file or None)

    def post(self, path: str, payload: dict[str, Any], *, key: str = "") -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310  (the scheme is checked in __init__: https, or http if allowed)
            self.server + path,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if key:
            request.add_header("Authorization", f"Agent {key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read() or b"{}").get("detail") or error.reason
            except ValueError:
                detail = error.reason
            raise AgentError(f"the server refused ({error.code}): {detail}") from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise AgentError(
                    f"the server's certificate is not trusted ({reason.verify_message}); pass --ca with its CA"
                ) from None
            raise AgentError(f"cannot reach {self.server}: {reason}") from None
        except (TimeoutError, OSError) as error:
            raise AgentError(f"cannot reach {self.server}: {error}") from None
