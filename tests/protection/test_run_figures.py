"""Run pages speak human: the final rate is bytes over wall time, phases name the disk and the machine."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from django.utils import timezone

from catalog import repositories
from catalog.services import create_repository
from protection.backup import _finish
from protection.choices import RunState
from protection.models import BackupRun
from protection.progress import RunProgress
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(estate: Estate, tmp_path: Path, settings) -> BackupRun:  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    return BackupRun.objects.create(machine=estate.finance_vm, repository=repository, state=RunState.RUNNING)


def test_the_final_rate_is_bytes_over_the_runs_wall_time(run: BackupRun) -> None:
    # A throttled run: 760 MB in 100 s, whose last burst went at 240 MB/s.
    BackupRun.objects.filter(pk=run.pk).update(
        started_at=timezone.now() - datetime.timedelta(seconds=100), bytes_done=760_000_000, rate=240.9e6
    )
    done = _finish(run, RunState.COMMITTED, "")
    assert 7.5e6 < done.rate < 7.7e6


def test_phases_name_the_disk_and_the_machine(run: BackupRun, client_for) -> None:  # type: ignore[no-untyped-def]
    progress = RunProgress(run, total=1000)
    progress.next_disk("Hard disk 1", 0)
    progress.step(1000, 1000, "reading 2000")
    run.refresh_from_db()
    assert run.phase == "reading disk 'Hard disk 1' of fin-db-01"
    BackupRun.objects.filter(pk=run.pk).update(bytes_total=3_000_000_000, bytes_done=0, rate=694_444)
    page = client_for("admin").get(f"/runs/{run.pk}/").content.decode()
    assert "1 h 12 min" in page  # 3 GB at 0.69 MB/s, said as people say it


def test_an_admin_cancels_every_queued_run_at_once(run: BackupRun, estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    queued = [
        BackupRun.objects.create(machine=machine, repository=run.repository)
        for machine in (estate.finance_vm, estate.research_vm, estate.finance_host)
    ]
    assert client_for("helpdesk").post("/runs/cancel/", {"all_queued": "1"}).status_code == 403
    client_for("admin").post("/runs/cancel/", {"runs": [queued[0].pk]})
    assert BackupRun.objects.get(pk=queued[0].pk).state == RunState.CANCELLED
    client_for("admin").post("/runs/cancel/", {"all_queued": "1"})
    assert set(BackupRun.objects.filter(pk__in=[q.pk for q in queued]).values_list("state", flat=True)) == {
        RunState.CANCELLED
    }
    assert BackupRun.objects.get(pk=run.pk).state == RunState.RUNNING  # a running one is not "queued"
    page = client_for("admin").get("/runs/?state=queued").content.decode()
    assert "No runs in this state" in page
