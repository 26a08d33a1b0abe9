"""Talking to the Bulwark console over HTTPS (urllib, the standard library's client).

Calls that may be repeated safely retry with back-off when the connection drops or the console is restarting
(every job call is idempotent on the console's side), for up to `retry_seconds`; a refusal (4xx) is never retried.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

logger = logging.getLogger("bulwark_agent")
RETRY_STATUSES = (502, 503, 504)


class AgentError(Exception):
    """Something the operator must fix (bad token, untrusted certificate, unreachable server)."""


class Refused(AgentError):
    """The console answered with a refusal: its status, a code the agent acts on, and any details."""

    def __init__(self, status: int, detail: str, data: dict[str, Any]) -> None:
        super().__init__(f"the server refused ({status}): {detail}")
        self.status = status
        self.code = str(data.get("code") or "")
        self.data = data


class Unreachable(AgentError):
    """The connection failed or dropped; worth trying again."""


class Client:
    def __init__(
        self,
        server: str,
        *,
        ca_file: str = "",
        allow_http: bool = False,
        timeout: float = 60.0,
        retry_seconds: float = 0.0,
    ) -> None:
        server = server.rstrip("/")
        if not server.startswith("https://") and not allow_http:
            raise AgentError(
                "the server address must start with https:// (an agent key never travels in clear)"
            )
        self.server = server
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.key = ""
        self.context = ssl.create_default_context(cafile=ca_file or None)
        self.retries = 0  # dropped connections recovered from (reported with the job)

    def _request(self, method: str, path: str, body: bytes | None, content_type: str, key: str) -> Any:
        request = urllib.request.Request(  # noqa: S310  (the scheme is checked in __init__: https, or http if allowed)
            self.server + path, data=body, method=method, headers={"Accept": "application/json"}
        )
        if body is not None:
            request.add_header("Content-Type", content_type)
        if key or self.key:
            request.add_header("Authorization", f"Agent {key or self.key}")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout, context=self.context)  # noqa: S310
        except urllib.error.HTTPError as error:
            try:
                data = json.loads(error.read() or b"{}")
            except (ValueError, OSError):
                data = {}
            if not isinstance(data, dict):
                data = {}
            if error.code in RETRY_STATUSES:
                raise Unreachable(
                    f"the server is unavailable ({error.code}): {data.get('detail') or error.reason}"
                ) from None
            raise Refused(error.code, str(data.get("detail") or error.reason), data) from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise AgentError(
                    f"the server's certificate is not trusted ({reason.verify_message}); pass --ca with its CA"
                ) from None
            raise Unreachable(f"cannot reach {self.server}: {reason}") from None
        except (TimeoutError, OSError, http.client.HTTPException) as error:
            raise Unreachable(f"cannot reach {self.server}: {error}") from None

    def _with_retries(self, attempt: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                return attempt()
            except Unreachable as error:
                if time.monotonic() + delay > deadline:
                    raise
                self.retries += 1
                logger.warning("%s; trying again in %.1f s", error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def call(self, method: str, path: str, payload: Any = None, *, key: str = "") -> dict[str, Any]:
        body = json.dumps(payload).encode() if payload is not None else None

        def attempt() -> dict[str, Any]:
            try:
                with self._request(method, path, body, "application/json", key) as response:
                    data = response.read()
            except (TimeoutError, OSError, http.client.HTTPException) as error:
                raise Unreachable(f"the connection to {self.server} dropped: {error}") from None
            try:
                answer = json.loads(data or b"{}")
            except ValueError:
                raise Unreachable(f"{self.server} sent an answer that is not JSON") from None
            return answer if isinstance(answer, dict) else {"items": answer}

        return self._with_retries(attempt)  # type: ignore[no-any-return]

    def post(self, path: str, payload: dict[str, Any], *, key: str = "") -> dict[str, Any]:
        return self.call("POST", path, payload, key=key)

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)

    def post_bytes(self, path: str, body: bytes) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            try:
                with self._request("POST", path, body, "application/octet-stream", "") as response:
                    return json.loads(response.read() or b"{}")  # type: ignore[no-any-return]
            except (TimeoutError, OSError, http.client.HTTPException) as error:
                raise Unreachable(f"the connection to {self.server} dropped: {error}") from None

        return self._with_retries(attempt)  # type: ignore[no-any-return]

    def open_stream(self, path: str) -> Any:
        """A response to read from (the caller retries the whole transfer if it drops midway)."""
        return self._with_retries(lambda: self._request("GET", path, None, "", ""))
