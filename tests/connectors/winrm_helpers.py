"""The contract tests' WinRM server (tests/peer_tools/winrm_server.py) as a separate process on a free port."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from connectors.base import Endpoint
from tests.live import make_ca_and_server_cert
from tests.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "hyperv" / "cluster.json"
USER, PASSWORD = "HV\\svc-backup", "Winrm-Test-Pass-1"


@dataclass
class WinRMServer:
    port: int
    ca: Path
    log: Path
    process: subprocess.Popen[str]

    def endpoint(self, **changes: object) -> Endpoint:
        values: dict[str, object] = {
            "kind": "hyperv",
            "address": "127.0.0.1",
            "port": self.port,
            "username": USER,
            "secret": PASSWORD,
            "ca_pem": self.ca.read_text(),
            "timeout": 10.0,
            "options": {"transport": "ntlm", "https": True},
        }
        values.update(changes)
        return Endpoint(**values)  # type: ignore[arg-type]

    def exchanges(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def start_server(
    tmp_path: Path, responses: Path = RECORDED, *, user: str = USER, password: str = PASSWORD
) -> WinRMServer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    port = free_port()
    log = tmp_path / "exchanges.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.peer_tools.winrm_server",
            "--port",
            str(port),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--user",
            user,
            "--password",
            password,
            "--responses",
            str(responses),
            "--log",
            str(log),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "READY"
    return WinRMServer(port, ca, log, process)
