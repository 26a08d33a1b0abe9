"""Contract tests: the Hyper-V connector against a WinRM server that speaks the WS-Management / WinRS exchanges
pywinrm sends (tests/peer_tools/winrm_server.py) and answers with recorded PowerShell JSON. They prove the
protocol path, authentication, TLS trust and parsing; they cannot prove what a real Windows host returns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.base import (
    BadCredentials,
    Endpoint,
    Misconfigured,
    ProtocolError,
    Unreachable,
    UntrustedCertificate,
)
from connectors.hyperv import HyperVConnector
from tests.connectors.winrm_helpers import PASSWORD, USER, WinRMServer, start_server
from tests.peers import free_port


@pytest.fixture
def winrm_server(tmp_path: Path) -> Iterator[WinRMServer]:
    server = start_server(tmp_path)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


def test_discovery_over_ntlm_reads_a_cluster(winrm_server: WinRMServer) -> None:
    inventory = HyperVConnector(winrm_server.endpoint()).discover()
    assert inventory.source_id == "HVC01" and inventory.topology["hosts"] == ["HV01", "HV02"]
    assert inventory.product == "Hyper-V on Microsoft Windows Server 2022 Datacenter"
    vms = {vm.name: vm for vm in inventory.machines}
    sql = vms["sql-01"]
    assert sql.identity == "hyperv:8e2a6d4c-5b1f-4c1e-9a55-3f4d2b7e9a01"
    assert (sql.host, sql.cluster, sql.power_state) == ("HV01", "HVC01", "Running")
    assert [d.capacity_bytes for d in sql.disks] == [137438953472, 536870912000]
    assert sql.disks[1].path.endswith("sql-01-data.vhdx") and sql.checkpoints == ["before patch 2026-11"]
    assert sql.attributes == {"notes": "owner: finance"} and "10.20.0.15" in sql.ip_addresses
    # ConvertTo-Json collapses one-element arrays and empty ones: the parser takes both.
    web = vms["web-01"]
    assert len(web.disks) == 1 and web.ip_addresses == ["10.20.0.31"] and web.checkpoints == []
    assert vms["build-agent"].cluster == "" and vms["build-agent"].disks[0].key == "IDE:0:0"
    # The exchange pywinrm performs, in order, for one PowerShell script.
    assert winrm_server.exchanges() == [
        "Create",
        "Command",
        "Script inventory v1",
        "Receive",
        "Signal",
        "Delete",
    ]


def test_basic_over_https_and_the_probe(winrm_server: WinRMServer) -> None:
    connector = HyperVConnector(winrm_server.endpoint(options={"transport": "basic", "https": True}))
    assert connector.test() == "Hyper-V on Microsoft Windows Server 2022 Datacenter (HV01)"


def test_wrong_password_is_refused_by_ntlm(winrm_server: WinRMServer) -> None:
    with pytest.raises(BadCredentials, match="refused the user name or password"):
        HyperVConnector(winrm_server.endpoint(secret="wrong")).test()


def test_an_untrusted_certificate_is_named_before_any_credential_is_sent(winrm_server: WinRMServer) -> None:
    with pytest.raises(UntrustedCertificate, match="SHA-256"):
        HyperVConnector(winrm_server.endpoint(ca_pem="")).test()
    assert winrm_server.exchanges() == []


def test_basic_over_http_is_refused_and_closed_ports_are_unreachable() -> None:
    with pytest.raises(Misconfigured, match="HTTPS only"):
        HyperVConnector(Endpoint(kind="hyperv", address="h", options={"transport": "basic", "https": False}))
    closed = Endpoint(
        kind="hyperv", address="127.0.0.1", port=free_port(), username=USER, secret=PASSWORD, timeout=3
    )
    with pytest.raises(Unreachable):
        HyperVConnector(closed).test()


def test_a_failing_script_reports_the_powershell_error(tmp_path: Path) -> None:
    responses = tmp_path / "responses.json"
    responses.write_text(
        json.dumps(
            {"inventory v1": {"exit": 1, "stderr": "Get-VM : You do not have the required permission"}}
        )
    )
    server = start_server(tmp_path, responses)
    try:
        with pytest.raises(ProtocolError, match="required permission"):
            HyperVConnector(server.endpoint()).discover()
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)


def test_kerberos_without_the_system_libraries_says_what_to_install() -> None:
    import importlib.util

    if importlib.util.find_spec("kerberos") is not None:
        pytest.skip("pykerberos is installed here")
    with pytest.raises(Misconfigured, match="libkrb5-dev"):
        HyperVConnector(Endpoint(kind="hyperv", address="h", options={"transport": "kerberos"}))
