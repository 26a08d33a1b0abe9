"""Helpers for tests that use real peers (Redis, an S3 server, Chromium). Django-free: engine tests use them."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_peer(reachable: bool, reason: str) -> None:
    """Skip locally when a peer is missing; under CI=true a missing peer is an error, never a skip."""
    if reachable:
        return
    if IN_CI:
        pytest.fail(f"required test peer missing in CI: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VCSIM_BINARY = os.path.join(ROOT, "var", "peers", "vcsim")
VCSIM_BUILD = os.path.join(ROOT, "tests", "peer_tools", "vcsim", "build.sh")


class Vcsim:
    """VMware's vCenter simulator (built from Debian's govmomi by tests/peer_tools/vcsim/build.sh) on a free
    port, with a login, over HTTPS with its self-signed certificate. Stopped by its own PID."""

    def __init__(
        self, *, vms: int = 2, hosts: int = 1, cluster_hosts: int = 3, password: str = "vcsim-Secret-1"
    ):
        import subprocess

        self.port = free_port()
        self.username = "administrator@vsphere.local"
        self.password = password
        self.process = subprocess.Popen(
            [
                VCSIM_BINARY,
                "-l",
                f"127.0.0.1:{self.port}",
                "-username",
                self.username,
                "-password",
                password,
                "-vm",
                str(vms),
                "-host",
                str(hosts),
                "-cluster-host",
                str(cluster_hosts),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"vcsim did not start: {line!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except Exception:
                self.process.kill()

    def thumbprint(self) -> str:
        import hashlib
        import ssl

        pem = ssl.get_server_certificate(("127.0.0.1", self.port))
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def vcsim_available() -> bool:
    """Build vcsim when its sources changed (seconds when cached); False when Go or govmomi are missing."""
    import subprocess

    if not os.path.exists("/usr/share/gocode/src/github.com/vmware/govmomi/simulator"):
        return os.access(VCSIM_BINARY, os.X_OK)
    result = subprocess.run(["sh", VCSIM_BUILD, VCSIM_BINARY], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"building vcsim failed:\n{result.stderr[-2000:]}")
    return os.access(VCSIM_BINARY, os.X_OK)


# --- fixtures (imported by tests/conftest.py, so every test folder has them) ---------------------------------
@pytest.fixture(scope="session")
def vcsim_built() -> bool:
    require_peer(
        vcsim_available(), "vcsim is not built (make peer-deps installs Go and govmomi, then builds it)"
    )
    return True


@pytest.fixture
def vcsim_factory(vcsim_built: bool) -> Iterator[Callable[..., Vcsim]]:
    """Start fresh simulators (each test may clone, rename and delete VMs freely)."""
    started: list[Vcsim] = []

    def start(**options: int) -> Vcsim:
        server = Vcsim(**options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def vcsim(vcsim_factory: Callable[..., Vcsim]) -> Vcsim:
    return vcsim_factory()
