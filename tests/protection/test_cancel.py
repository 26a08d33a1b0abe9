"""Cancelling a running backup on vcsim: it stops in the middle of a throttled read (a slow bandwidth limit makes
each read wait tens of seconds), removes its snapshot, commits nothing, shows one state, and the next run reuses
what it stored. Full reads (the run's thread waits) and changed areas (a reader thread waits) both."""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from catalog import repositories
from catalog.models import RecoveryPoint
from engine.maintenance import verify
from protection.backup import cancel_run, run_backup, start_backup
from protection.choices import RunState
from protection.models import BackupRun
from tests.connectors.vsphere_helpers import Admin, snapshot_count, upload_disk
from tests.protection.test_backup_runs import protected_vm  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)
logger = logging.getLogger(__name__)
# A guard against a hang only: the figures in the closing note are what the cancel took here.
GUARD = 60.0


def _run_and_cancel(machine, admin_user) -> tuple[BackupRun, float]:  # type: ignore[no-untyped-def]
    run = start_backup(machine=machine, requested_by=admin_user)
    worker = threading.Thread(target=run_backup, args=(run.pk,), daemon=True)
    worker.start()
    started = time.monotonic()
    while not BackupRun.objects.filter(pk=run.pk, phase__startswith="reading").exists():
        assert time.monotonic() - started < GUARD and worker.is_alive(), BackupRun.objects.get(
            pk=run.pk
        ).error
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the first throttled wait
    asked = time.monotonic()
    cancel_run(run=BackupRun.objects.get(pk=run.pk), actor=admin_user)
    running = BackupRun.objects.get(pk=run.pk)
    assert running.state == RunState.RUNNING and running.cancel_requested
    worker.join(GUARD)
    took = time.monotonic() - asked
    assert not worker.is_alive()
    logger.warning("cancel took %.2f s", took)
    return BackupRun.objects.get(pk=run.pk), took


def _assert_cancelled_cleanly(run: BackupRun, vcsim) -> None:  # type: ignore[no-untyped-def]
    assert run.state == RunState.CANCELLED
    assert run.phase == "cancelled" and run.error == ""  # one state, not also "failed"
    assert run.bytes_done < run.bytes_total  # it stopped in the middle, not after reading everything
    assert run.steps[-1]["text"] == "cancelled on request"
    assert not RecoveryPoint.objects.filter(run=run).exists()
    admin = Admin(vcsim)
    assert snapshot_count(admin, "DC0_H0_VM0") == 0
    admin.close()
    assert not verify(repositories.open_repository(run.repository)).problems


def test_a_throttled_full_read_stops_within_seconds_of_cancel(protected_vm, estate) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    machine, image, vcsim = protected_vm
    policy = machine.assignment.policy
    policy.bandwidth_limit_mbps = 1  # 125 kB/s: the first 4 MiB read alone would wait half a minute
    policy.save()
    run, _ = _run_and_cancel(machine, estate.admin)
    _assert_cancelled_cleanly(run, vcsim)
    policy.bandwidth_limit_mbps = None
    policy.save()
    again = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert again.state == RunState.COMMITTED and again.bytes_done == len(image)


def test_a_throttled_changed_area_read_stops_within_seconds_of_cancel(protected_vm, estate) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    machine, image, vcsim = protected_vm
    first = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert first.state == RunState.COMMITTED
    day2 = bytearray(image)
    rng = random.Random(5)
    for block in range(0, len(image) // 65536, 2):  # half the disk changes: many runs for the reader thread
        day2[block * 65536 : block * 65536 + 65536] = rng.randbytes(65536)
    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM0", bytes(day2))
    admin.close()
    policy = machine.assignment.policy
    policy.bandwidth_limit_mbps = 1
    policy.save()
    run, _ = _run_and_cancel(machine, estate.admin)
    assert not run.full_read  # the changed-area path, read by the engine's reader thread
    _assert_cancelled_cleanly(run, vcsim)
