"""A TCP relay in front of a server (TLS passes through untouched) that can cut every connection at once and
refuse new ones for a while: a network that drops, as a watch sees it."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from pathlib import Path


class TcpRelay:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()
        self.generation = 0  # cut() moves it on; pairs of an older generation close themselves
        self.closed = False
        self.budget: int | None = None  # bytes the server may still send before every connection is cut
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()  # the network is down: the connection dies at once
                continue
            threading.Thread(target=self._serve, args=(client, self.generation), daemon=True).start()

    def _wrap(self, client: socket.socket, server: socket.socket) -> tuple[socket.socket, socket.socket]:
        return client, server

    def _serve(self, client: socket.socket, generation: int) -> None:
        """Relay one connection in one thread (an OpenSSL object must not be used by two threads at once)."""
        try:
            client, server = self._wrap(client, socket.create_connection(self.upstream, timeout=5))
        except OSError:
            client.close()
            return
        pairs = {client: server, server: client}
        clean = True
        try:
            while generation == self.generation and not self.closed:
                ready = [sock for sock in pairs if isinstance(sock, ssl.SSLSocket) and sock.pending()]
                if not ready:
                    ready, _, _ = select.select(list(pairs), [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is server and self.budget is not None:
                        with self.lock:
                            allowed, self.budget = data[: self.budget], max(0, self.budget - len(data))
                            if len(allowed) < len(data):
                                self.budget = None  # one answer breaks off; later connections pass
                        client.sendall(allowed)
                        if len(allowed) < len(data):
                            return  # the answer stops mid-way, and the connection closes cleanly
                        continue
                    pairs[sock].sendall(data)
            clean = False  # cut: the link breaks, no goodbye
        except OSError:
            clean = False
        finally:
            for sock in (client, server):
                if clean and isinstance(sock, ssl.SSLSocket):
                    with contextlib.suppress(OSError, ValueError):
                        sock.unwrap()  # a clean TLS close: the client sees the answer end, not a broken link
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        """Drop every connection now, and refuse new ones until restore()."""
        self.open.clear()
        self.generation += 1

    def cut_after(self, nbytes: int) -> None:
        """Let the server send `nbytes` more, then close: an answer that ends half-way."""
        self.budget = nbytes

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


class TlsRelay(TcpRelay):
    """The same, ending TLS on both sides with a certificate of its own, so a cut answer ends with a clean TLS
    close (close_notify): the HTTP client then sees a body shorter than its Content-Length (IncompleteRead)."""

    def __init__(self, upstream_port: int, folder: Path) -> None:
        from tests.live import make_ca_and_server_cert

        _, cert, key = make_ca_and_server_cert(folder)
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(cert, key)
        self.upstream_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.upstream_context.check_hostname = False
        self.upstream_context.verify_mode = ssl.CERT_NONE
        self.certificate = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
        super().__init__(upstream_port)

    def _wrap(self, client: socket.socket, server: socket.socket) -> tuple[socket.socket, socket.socket]:
        return (
            self.server_context.wrap_socket(client, server_side=True),
            self.upstream_context.wrap_socket(server),
        )

    @property
    def thumbprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.certificate).hexdigest()
