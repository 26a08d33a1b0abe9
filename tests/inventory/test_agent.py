"""The agent as a real separate process, enrolling over HTTPS against a live console, then heartbeating."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone

from inventory import agents
from inventory.models import Agent, Machine
from protection import services as protection
from protection.choices import AlertKind
from protection.models import Alert, Assignment
from tests.conftest import Estate
from tests.live import make_ca_and_server_cert, serve_asgi

ROOT = Path(__file__).resolve().parents[2]


def agent(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "agent")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bulwark_agent",
            "--state-dir",
            str(state),
            "--machine-id",
            "6f1c0ffee0000000000000000000beef",
            "--hostname",
            "backup-test-01",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def console(tmp_path: Path, transactional_db: None) -> Iterator[tuple[str, Path]]:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    with serve_asgi(certfile=cert, keyfile=key) as url:
        yield url, ca


def test_an_agent_enrols_reports_facts_and_heartbeats(
    console: tuple[str, Path], estate: Estate, tmp_path: Path
) -> None:
    url, ca = console
    gold = protection.create_policy(actor=None, name="physical")
    protection.create_rule(actor=None, name="agents", policy=gold, match_platform="agent")
    _, token = agents.create_enrolment_token(actor=estate.admin, label="rack 4", groups=[estate.finance])
    state = tmp_path / "state"

    untrusted = agent(state, "enrol", "--server", url, "--token", token)
    assert (
        untrusted.returncode == 2 and "not trusted" in untrusted.stderr
    )  # no --ca: the private CA is unknown

    enrolled = agent(state, "enrol", "--server", url, "--token", token, "--ca", str(ca), "--interval", "30")
    assert enrolled.returncode == 0, enrolled.stderr
    machine = Machine.objects.get(identity="agent:6f1c0ffee0000000000000000000beef")
    assert machine.name == "backup-test-01" and machine.kind == "physical" and machine.platform == "agent"
    assert machine.facts["volumes"] and machine.facts["os"] and machine.ip_addresses
    assert machine.disks.exists()
    assert estate.finance in machine.groups.all()
    assert Assignment.objects.get(machine=machine).policy == gold  # protected by rule at enrolment
    assert (state / "agent.json").stat().st_mode & 0o777 == 0o600
    assert token not in (state / "agent.json").read_text()

    reused = agent(tmp_path / "other", "enrol", "--server", url, "--token", token, "--ca", str(ca))
    assert reused.returncode == 2 and "used already" in reused.stderr

    record = Agent.objects.get(machine=machine)
    Agent.objects.filter(pk=record.pk).update(last_heartbeat_at=timezone.now() - datetime.timedelta(hours=1))
    assert agents.check_heartbeats() == [record]
    assert not Agent.objects.get(pk=record.pk).online
    assert Alert.objects.open().filter(kind=AlertKind.AGENT_OFFLINE, machine=machine).exists()

    beat = agent(state, "run", "--once")
    assert beat.returncode == 0, beat.stderr
    record.refresh_from_db()
    assert record.online and record.last_heartbeat_at > timezone.now() - datetime.timedelta(minutes=1)
    assert not Alert.objects.open().filter(kind=AlertKind.AGENT_OFFLINE, machine=machine).exists()


def test_a_forged_agent_key_is_refused(console: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = console
    state = tmp_path / "state"
    state.mkdir()
    forged = {"server": url, "ca": str(ca), "key": "bwa_00000000_forged", "machine": 1, "interval": 30}
    (state / "agent.json").write_text(json.dumps(forged))
    beat = agent(state, "run", "--once")
    assert beat.returncode == 2 and "401" in beat.stderr
