"""Agentless Hyper-V backups: WinRM contract server for the checkpoint and RCT answers (recorded JSON, no Windows
host here), real data path: a VHDX made by qemu-img, served by Samba, read over SMB and parsed by dissect."""

from __future__ import annotations

import copy
import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog import repositories
from catalog.models import RecoveryPoint
from catalog.services import create_repository
from engine.image import restore_image
from inventory.models import Machine
from inventory.services import create_source
from protection import services
from protection.backup import run_backup, start_backup
from protection.choices import RunState
from tests.connectors.winrm_helpers import RECORDED, start_server
from tests.inventory.test_discovery import discover
from tests.peers import Samba, require_peer, samba_available

VM_ID = "8e2a6d4c-5b1f-4c1e-9a55-3f4d2b7e9a01"
SIZE = 8 * 1024 * 1024
BLOCK = 64 * 1024


def make_vhdx(raw: bytes, share: Path, work: Path) -> None:
    (work / "disk.raw").write_bytes(raw)
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vhdx",
            str(work / "disk.raw"),
            str(share / "sql-01.vhdx"),
        ],
        check=True,
    )


def answers(rct: str, changes: list[tuple[int, int]]) -> dict:  # type: ignore[type-arg]
    recorded = json.loads(RECORDED.read_text())
    recorded["checkpoint v1"] = {
        "stdout": {
            "Checkpoint": "1b2c3d4e-0000-4000-8000-00000000c0de",
            "Production": True,
            "Disks": {
                "Key": "SCSI:0:0",
                "Path": "C:\\ClusterStorage\\Volume1\\sql-01\\sql-01.vhdx",
                "Share": "\\\\HV01\\vms\\sql-01.vhdx",
                "Size": SIZE,
                "DiskIdentifier": "5f0e1d2c-3b4a-4958-8776-655443322110",
                "RctId": rct,
            },
        }
    }
    recorded["changes v1"] = {
        "stdout": {
            "Offsets": [o for o, _ in changes],
            "Lengths": [n for _, n in changes],
            "Processed": SIZE,
            "Size": SIZE,
        }
    }
    recorded["remove-checkpoint v1"] = {"stdout": {"Removed": True}}
    return copy.deepcopy(recorded)


@pytest.fixture
def samba(tmp_path: Path) -> Iterator[tuple[Samba, Path]]:
    require_peer(samba_available(), "smbd is missing or this is not root (make peer-deps installs Samba)")
    require_peer(
        shutil.which("qemu-img") is not None, "qemu-img is missing (make peer-deps installs qemu-utils)"
    )
    # smbd serves the share as the Samba user: the folder must be reachable by others (pytest's are 0700).
    share = Path(tempfile.mkdtemp(prefix="bulwark-smb-"))
    share.chmod(0o755)
    server = Samba(str(share), str(tmp_path / "samba"))
    yield server, share
    import smbclient

    smbclient.reset_connection_cache()
    server.stop()
    shutil.rmtree(share, ignore_errors=True)


@pytest.mark.django_db
def test_a_hyperv_vm_is_backed_up_over_smb_then_incrementally_with_rct(samba, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    smb, share = samba
    rng = random.Random(4)
    raw = bytearray(SIZE)
    for block in range(0, SIZE // BLOCK, 3):
        raw[block * BLOCK : block * BLOCK + BLOCK] = rng.randbytes(BLOCK)
    make_vhdx(bytes(raw), share, tmp_path)
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(answers("rct:1", [])))
    winrm = start_server(tmp_path / "winrm", responses, user=f"HV\\{Samba.user}", password=Samba.password)
    try:
        source = create_source(
            actor=None,
            name="hv",
            kind="hyperv",
            address="127.0.0.1",
            port=winrm.port,
            username=f"HV\\{Samba.user}",
            password=Samba.password,
            ca_certificate=winrm.ca.read_text(),
            options={"transport": "ntlm", "https": True},
        )
        source.options = {**source.options, "smb_port": smb.port}
        source.save()
        discover(source)
        repository = create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))
        repositories.forget_open_repositories()
        policy = services.create_policy(actor=None, name="hv")
        type(policy).objects.filter(pk=policy.pk).update(repository=repository)
        services.create_rule(actor=None, name="sql", policy=policy, match_name="sql-01")
        machine = Machine.objects.get(identity=f"hyperv:{VM_ID}")

        first = run_backup(start_backup(machine=machine, requested_by=None).pk)
        assert first.state == RunState.COMMITTED, first.error
        assert first.full_read and first.bytes_total == SIZE
        engine = repositories.open_repository(repository)
        point = RecoveryPoint.objects.get(run=first)
        assert point.consistent  # a production checkpoint
        restore_image(engine, engine.load_snapshot(point.snapshot_id), "SCSI:0:0", tmp_path / "first.img")
        assert (tmp_path / "first.img").read_bytes() == bytes(raw)

        changed = [(5 * BLOCK, BLOCK), (70 * BLOCK, 2 * BLOCK)]
        for offset, length in changed:
            raw[offset : offset + length] = rng.randbytes(length)
        (share / "sql-01.vhdx").unlink()
        make_vhdx(bytes(raw), share, tmp_path)
        responses.write_text(json.dumps(answers("rct:2", changed)))
        second = run_backup(start_backup(machine=machine, requested_by=None).pk)
        assert second.state == RunState.COMMITTED, second.error
        assert not second.full_read and second.bytes_total == 3 * BLOCK
        point = RecoveryPoint.objects.get(run=second)
        restore_image(engine, engine.load_snapshot(point.snapshot_id), "SCSI:0:0", tmp_path / "second.img")
        assert (tmp_path / "second.img").read_bytes() == bytes(raw)
        log = winrm.exchanges()
        assert log.count("Script checkpoint v1") == 2 and log.count("Script remove-checkpoint v1") == 2
        assert f"Parameters $vmId = '{VM_ID}'; $name = 'bulwark-run-{first.pk}'; $production = $true" in log
        assert any(line.startswith("Parameters $vmId") and "$since = 'rct:1'" in line for line in log)

        # The policy's pre- and post-snapshot scripts run on the host around the checkpoint; a failing
        # pre-script stops the backup before any checkpoint is taken.
        type(policy).objects.filter(pk=policy.pk).update(
            pre_script="Stop-Service AppWriter", post_script="Start-Service AppWriter"
        )
        recorded = answers("rct:2", [])
        recorded["pre-script v1"] = {"stdout": {"Output": "stopped"}}
        recorded["post-script v1"] = {"stdout": {"Output": "started"}}
        responses.write_text(json.dumps(recorded))
        before = len(winrm.exchanges())
        third = run_backup(start_backup(machine=machine, requested_by=None).pk)
        assert third.state == RunState.COMMITTED, third.error
        steps = [step["text"] for step in third.steps]  # the step log: scripts with their output, in order
        assert steps[:3] == [
            "pre-snapshot script ran on the host: stopped",
            "checkpoint taken (production checkpoint)",
            "post-snapshot script ran on the host: started",
        ]
        assert steps[-1].startswith("checkpoint removed; recovery point")
        scripts_run = [line for line in winrm.exchanges()[before:] if line.startswith("Script")]
        assert scripts_run == [
            "Script pre-script v1",
            "Script checkpoint v1",
            "Script post-script v1",
            "Script changes v1",
            "Script remove-checkpoint v1",
        ]
        recorded["pre-script v1"] = {"exit": 1, "stderr": "Stop-Service : Cannot stop service AppWriter"}
        responses.write_text(json.dumps(recorded))
        checkpoints = winrm.exchanges().count("Script checkpoint v1")
        fourth = run_backup(start_backup(machine=machine, requested_by=None).pk)
        assert fourth.state == RunState.FAILED and "pre-snapshot script failed" in fourth.error
        assert "Cannot stop service AppWriter" in fourth.error
        assert winrm.exchanges().count("Script checkpoint v1") == checkpoints
    finally:
        winrm.process.terminate()
        winrm.process.wait(timeout=10)
