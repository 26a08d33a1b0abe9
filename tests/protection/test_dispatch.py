"""Dispatch rules without workers: site and jurisdiction, stream limits, snapshot limits, the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import timezone

from catalog.services import create_repository
from protection.choices import RunState
from protection.dispatch import dispatch
from protection.models import BackupRun, Proxy
from tests.factories import MachineFactory


@pytest.fixture
def repository(db: None, tmp_path: Path):  # type: ignore[no-untyped-def]
    return create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))


def queue(machine, repository) -> BackupRun:  # type: ignore[no-untyped-def]
    return BackupRun.objects.create(machine=machine, repository=repository)


@pytest.fixture
def run_dispatch(django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """dispatch(), with the messages it sends once its transaction commits recorded as (run, queue)."""
    sent: list[tuple[int, str]] = []

    def call() -> list[tuple[int, str]]:
        with django_capture_on_commit_callbacks(execute=True):
            dispatch(send=lambda run_id, name: sent.append((run_id, name)))
        return sent

    return call


@pytest.mark.django_db
def test_the_least_loaded_eligible_proxy_gets_the_run_and_full_proxies_make_runs_wait(
    repository, run_dispatch
) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    Proxy.objects.create(name="eu-1", queue="proxy.eu-1", jurisdiction="EU", max_streams=1, last_seen=now)
    Proxy.objects.create(name="eu-2", queue="proxy.eu-2", jurisdiction="EU", max_streams=2, last_seen=now)
    Proxy.objects.create(name="us-1", queue="proxy.us-1", jurisdiction="US", max_streams=5, last_seen=now)
    machines = [MachineFactory(jurisdiction="EU", host=f"esx-{n}") for n in range(4)]
    runs = [queue(m, repository) for m in machines]
    sent = run_dispatch()
    assert sorted(name for _, name in sent) == ["proxy.eu-1", "proxy.eu-2", "proxy.eu-2"]
    waiting = BackupRun.objects.get(pk=runs[3].pk)
    assert waiting.state == RunState.WAITING and "stream limit" in waiting.phase
    first_proxy = dict(sent)
    freed = next(run for run in runs[:3] if first_proxy[run.pk] == "proxy.eu-1")
    BackupRun.objects.filter(pk=freed.pk).update(state=RunState.COMMITTED)  # a stream frees up
    sent = run_dispatch()
    assert sent[-1] == (runs[3].pk, "proxy.eu-1")


@pytest.mark.django_db
def test_no_proxy_in_the_jurisdiction_waits_with_the_reason(repository) -> None:  # type: ignore[no-untyped-def]
    Proxy.objects.create(name="us-1", queue="proxy.us-1", jurisdiction="US", last_seen=timezone.now())
    run = queue(MachineFactory(jurisdiction="EU"), repository)
    assert dispatch(send=lambda *_: None) == []
    assert BackupRun.objects.get(pk=run.pk).phase == "waiting: no proxy online in jurisdiction EU"


@pytest.mark.django_db
def test_snapshots_per_host_and_per_datastore_are_limited(repository, settings, run_dispatch) -> None:  # type: ignore[no-untyped-def]
    settings.BULWARK_SNAPSHOTS_PER_HOST = 1
    settings.BULWARK_SNAPSHOTS_PER_DATASTORE = 2
    same_host = [queue(MachineFactory(host="esx-1", datastores=["ds1"]), repository) for _ in range(2)]
    same_store = [
        queue(MachineFactory(host=f"esx-{n + 2}", datastores=["ds2"]), repository) for n in range(3)
    ]
    sent = run_dispatch()  # no proxy: the embedded worker's default queue
    assert {name for _, name in sent} == {"celery"}
    assert BackupRun.objects.get(pk=same_host[1].pk).phase.startswith("waiting: host esx-1")
    assert BackupRun.objects.get(pk=same_store[2].pk).phase.startswith("waiting: datastore ds2")
