"""Two proxies as two real Celery worker processes on their own queues (broker: the local Redis): each machine's
backup goes to the proxy of its jurisdiction and runs there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from celery import Celery
from django.db import connection

from inventory.models import Machine
from protection import services
from protection.backup import create_repository
from protection.choices import RunState
from protection.dispatch import dispatch
from protection.models import BackupRun, Proxy
from tests.connectors.vsphere_helpers import Admin, upload_disk
from tests.inventory.test_discovery import discover, make_source
from tests.peers import Vcsim, port_open, require_peer

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    return f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/{settings['NAME']}"


@pytest.fixture
def broker() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    parsed = urlparse(url)
    require_peer(
        port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379), f"Redis at {url} is not reachable"
    )
    return f"redis://{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}/7"


@pytest.fixture
def proxies(broker: str, transactional_db: None) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "DATABASE_URL": database_url(),
        "BULWARK_EMBEDDED_WATCH": "false",
    }
    processes = {}
    for name, jurisdiction in ((f"eu-{suffix}", "EU"), (f"us-{suffix}", "US")):
        processes[name] = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "proxy",
                "--name",
                name,
                "--jurisdiction",
                jurisdiction,
                "--streams",
                "1",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    deadline = time.monotonic() + 60
    while Proxy.objects.filter(name__endswith=suffix).count() < 2:
        assert time.monotonic() < deadline, "the proxies did not register"
        time.sleep(0.2)
    time.sleep(2)  # the workers start consuming
    yield {name.split("-")[0].upper(): name for name in processes}
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        process.wait(timeout=20)


def test_each_jurisdiction_backs_up_through_its_own_proxy(
    proxies: dict[str, str], broker: str, vcsim: Vcsim, tmp_path: Path
) -> None:
    sender = Celery(broker=broker, set_as_current=False)
    repository = create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))
    policy = services.create_policy(actor=None, name="gold")
    type(policy).objects.filter(pk=policy.pk).update(repository=repository)
    admin = Admin(vcsim)
    for name in ("DC0_H0_VM0", "DC0_H0_VM1"):
        upload_disk(admin, name, os.urandom(2 * 1024 * 1024))
    admin.close()
    discover(make_source(vcsim))
    machines = {"EU": Machine.objects.get(name="DC0_H0_VM0"), "US": Machine.objects.get(name="DC0_H0_VM1")}
    runs = {}
    for jurisdiction, machine in machines.items():
        Machine.objects.filter(pk=machine.pk).update(jurisdiction=jurisdiction)
        runs[jurisdiction] = BackupRun.objects.create(machine=machine, policy=policy, repository=repository)
    sent = dispatch(
        send=lambda run_id, queue: sender.send_task("protection.run_backup", args=(run_id,), queue=queue)
    )
    assert {run.pk for run in sent} == {run.pk for run in runs.values()}
    deadline = time.monotonic() + 90
    while (
        BackupRun.objects.filter(pk__in=[r.pk for r in runs.values()], state=RunState.COMMITTED).count() < 2
    ):
        failed = BackupRun.objects.filter(state=RunState.FAILED).first()
        assert failed is None, failed.error if failed else ""
        assert time.monotonic() < deadline, list(BackupRun.objects.values("state", "phase", "error"))
        time.sleep(0.3)
    for jurisdiction, run in runs.items():
        run.refresh_from_db()
        assert run.proxy is not None and run.proxy.name == proxies[jurisdiction]
        assert run.worker.startswith(proxies[jurisdiction] + "@")
