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

from catalog.services import create_repository
from inventory.models import Machine
from protection import services
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


def test_a_worker_killed_mid_backup_fails_its_run_and_the_next_run_reuses_the_stored_data(
    broker: str, vcsim: Vcsim, tmp_path: Path, transactional_db: None
) -> None:
    """SIGKILL the proxy in the middle of a (bandwidth-limited) backup: the run is reaped as failed with the
    reason, the repository verifies clean, and the next run stores only what the killed one had not."""
    import datetime
    import signal

    from django.utils import timezone

    from catalog import repositories
    from engine.maintenance import verify
    from protection.backup import reap_stale_runs, run_backup

    name = f"doomed-{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "DATABASE_URL": database_url(),
        "BULWARK_EMBEDDED_WATCH": "false",
        "BULWARK_INDEX_CHECKPOINT_SECONDS": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "proxy", "--name", name, "--streams", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        repository = create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))
        policy = services.create_policy(actor=None, name="slow")
        type(policy).objects.filter(pk=policy.pk).update(
            repository=repository, bandwidth_limit_mbps=40
        )  # 5 MB/s
        admin = Admin(vcsim)
        upload_disk(admin, "DC0_H0_VM0", os.urandom(32 * 1024 * 1024))
        admin.close()
        discover(make_source(vcsim))
        machine = Machine.objects.get(name="DC0_H0_VM0")
        deadline = time.monotonic() + 60
        while not Proxy.objects.filter(name=name).exists():
            assert time.monotonic() < deadline, "the proxy did not register"
            time.sleep(0.2)
        time.sleep(2)
        run = BackupRun.objects.create(machine=machine, policy=policy, repository=repository)
        sender = Celery(broker=broker, set_as_current=False)
        dispatch(
            send=lambda run_id, queue: sender.send_task("protection.run_backup", args=(run_id,), queue=queue)
        )
        while BackupRun.objects.get(pk=run.pk).bytes_done < 24 * 1024 * 1024:
            assert time.monotonic() < deadline + 60, BackupRun.objects.values("state", "phase", "error").get(
                pk=run.pk
            )
            time.sleep(0.2)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert BackupRun.objects.get(pk=run.pk).state == RunState.RUNNING  # nobody knows yet
    reaped = reap_stale_runs(now=timezone.now() + datetime.timedelta(minutes=10))
    assert [r.pk for r in reaped] == [run.pk]
    failed = BackupRun.objects.get(pk=run.pk)
    assert failed.state == RunState.FAILED and "stopped giving signs of life" in failed.error
    repositories.forget_open_repositories()
    engine = repositories.open_repository(repository)
    assert [p for p in verify(engine).problems if p.severity == "error"] == []
    Proxy.objects.filter(name=name).update(enabled=False)
    retry = BackupRun.objects.create(machine=machine, policy=policy, repository=repository)
    type(policy).objects.filter(pk=policy.pk).update(bandwidth_limit_mbps=None)
    done = run_backup(retry.pk)
    assert done.state == RunState.COMMITTED, done.error
    assert done.bytes_new < 28 * 1024 * 1024  # the killed run's checkpointed chunks were reused
