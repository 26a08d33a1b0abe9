"""An HTTP proxy in front of the local S3 server that fails chosen requests, the way a flaky network or an
overloaded object store does: a 503 answer, or no answer until the client times out."""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


@dataclass
class FaultPlan:
    """Which requests to fail: method and a regular expression on the path, and how often."""

    method: str = "PUT"
    path: str = r"/data/"
    mode: str = "error"  # "error" (503 SlowDown) or "hang" (never answer in time)
    remaining: int = 0  # how many matching requests still fail; 0 = none, -1 = all
    hang_seconds: float = 5.0
    failed: int = field(default=0)

    def should_fail(self, method: str, path: str) -> bool:
        if self.remaining == 0 or method != self.method or not re.search(self.path, path):
            return False
        if self.remaining > 0:
            self.remaining -= 1
        self.failed += 1
        return True


@contextmanager
def faulty_proxy(upstream: str, plan: FaultPlan) -> Iterator[str]:
    target = urlparse(upstream)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                fail = plan.should_fail(self.command, self.path)
            if fail and plan.mode == "hang":
                time.sleep(plan.hang_seconds)
                self.close_connection = True
                return
            if fail:
                message = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            headers["Host"] = f"{target.hostname}:{target.port}"
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            payload = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(key, value)
            # A HEAD answer has no body but tells the object's length: pass that on as it is.
            length = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            connection.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
