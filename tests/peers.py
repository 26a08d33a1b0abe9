"""Helpers for tests that use real peers (Redis, an S3 server, Chromium). Django-free: engine tests use them."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

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


def stop_process(process: Any) -> None:
    """Stop a peer by its own PID: politely, then for good."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except Exception:
            process.kill()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VCSIM_BINARY = os.path.join(ROOT, "var", "peers", "vcsim")
VCSIM_BUILD = os.path.join(ROOT, "tests", "peer_tools", "vcsim", "build.sh")


GUEST_USER = "root"
GUEST_PASSWORD = "guest-Secret-1"


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
            # The guest of every powered-on VM is this machine, with this login (tests/peer_tools/vcsim/guest.go).
            env={**os.environ, "VCSIM_GUEST_USER": GUEST_USER, "VCSIM_GUEST_PASSWORD": GUEST_PASSWORD},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"vcsim did not start: {line!r}")

    def stop(self) -> None:
        stop_process(self.process)

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


class Samba:
    """Debian's smbd with a private configuration: one share of `folder` (read-only unless `writable`), one user, a
    free port on 127.0.0.1 only. Stopped by its own PID."""

    user = "bulwarksmb"
    password = "Smb-Test-Pass-1"

    def __init__(self, folder: str, state: str, *, writable: bool = False) -> None:
        import pwd
        import subprocess
        import time as _time

        self.port = free_port()
        conf = os.path.join(state, "smb.conf")
        for sub in ("private", "lock", "state", "cache", "pid"):
            os.makedirs(os.path.join(state, sub), exist_ok=True)
        with open(conf, "w") as handle:
            handle.write(
                "[global]\n"
                f"  smb ports = {self.port}\n  interfaces = lo\n  bind interfaces only = yes\n"
                f"  private dir = {state}/private\n  lock directory = {state}/lock\n  state directory = {state}/state\n"
                f"  cache directory = {state}/cache\n  pid directory = {state}/pid\n  ncalrpc dir = {state}/ncalrpc\n"
                f"  passdb backend = tdbsam:{state}/private/passdb.tdb\n  server role = standalone server\n"
                f"  log file = {state}/log.%m\n  map to guest = Never\n  server min protocol = SMB2_10\n"
                "  disable spoolss = yes\n  load printers = no\n  printing = bsd\n  printcap name = /dev/null\n"
                f"[vms]\n  path = {folder}\n  read only = {'no' if writable else 'yes'}\n  valid users = {self.user}\n"
            )
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", self.user], check=True)
        if writable:  # smbd writes as the Samba user
            user = pwd.getpwnam(self.user)
            os.chown(folder, user.pw_uid, user.pw_gid)
        subprocess.run(
            ["smbpasswd", "-c", conf, "-s", "-a", self.user],
            input=f"{self.password}\n{self.password}\n",
            text=True,
            check=True,
            capture_output=True,
        )
        # A session of its own: smbd signals its whole process group when it stops, which must not be ours.
        self.process = subprocess.Popen(
            ["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", conf],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = _time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            if _time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("smbd did not start")
            _time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.process)


def samba_available() -> bool:
    import shutil

    return shutil.which("smbd") is not None and shutil.which("smbpasswd") is not None and os.geteuid() == 0
