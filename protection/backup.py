"""Backup runs: queue, claim, snapshot, read, write through the engine, commit, and always clean up.

A run is claimed with a conditional update (queued → running), so a message delivered twice does nothing. A run
that fails or is cancelled commits no snapshot; what it already stored stays in the repository and the next run
reuses it (the engine deduplicates against every pack confirmed stored).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from catalog.models import RecoveryPoint
from connectors.base import ConnectorError
from connectors.registry import connector_for
from core import audit
from core.events import publish_machine_events
from core.models import User
from engine.errors import EngineError
from engine.image import ImageWriter
from inventory.models import Machine
from protection import repositories
from protection.choices import ACTIVE_RUN_STATES, AlertKind, RunState, RunTrigger, Severity
from protection.models import Assignment, BackupRun, Policy, Repository
from protection.progress import RunCancelled, RunProgress

logger = logging.getLogger(__name__)


class BackupRefused(Exception):
    """The run cannot start (no policy, no repository, a platform without an agentless path yet)."""


@transaction.atomic
def start_backup(
    *,
    machine: Machine,
    requested_by: User | None,
    trigger: str = RunTrigger.MANUAL,
    policy: Policy | None = None,
) -> BackupRun:
    """Queue a backup of a machine under its policy (or return the run already active); the task is sent once
    the transaction commits."""
    from protection import tasks

    if policy is None:
        assignment = Assignment.objects.filter(machine=machine).select_related("policy__repository").first()
        policy = assignment.policy if assignment else None
    if policy is None:
        raise BackupRefused(f"{machine.name} has no protection policy")
    if policy.repository is None:
        raise BackupRefused(f"policy {policy.name} names no repository")
    if machine.gone_since is not None:
        raise BackupRefused(f"{machine.name} is gone from its source")
    active = BackupRun.objects.filter(machine=machine, state__in=ACTIVE_RUN_STATES).first()
    if active is not None:
        return active
    run = BackupRun.objects.create(
        machine=machine,
        policy=policy,
        repository=policy.repository,
        trigger=trigger,
        requested_by=requested_by,
    )
    if requested_by is not None:
        audit.record(
            "backup.start", actor=requested_by, target=machine, after={"run": run.pk, "policy": policy.name}
        )
    transaction.on_commit(lambda: tasks.run_backup.delay(run.pk))
    _announce(run)
    return run


def cancel_run(*, run: BackupRun, actor: User) -> BackupRun:
    """Ask a run to stop: a queued one stops at once, a running one at its next progress step."""
    if BackupRun.objects.filter(pk=run.pk, state__in=[RunState.QUEUED, RunState.WAITING]).update(
        state=RunState.CANCELLED, cancel_requested=True, finished_at=timezone.now(), phase="cancelled"
    ):
        run.refresh_from_db()
    else:
        BackupRun.objects.filter(pk=run.pk, state__in=ACTIVE_RUN_STATES).update(cancel_requested=True)
        run.refresh_from_db()
    audit.record("backup.cancel", actor=actor, target=run.machine, after={"run": run.pk})
    _announce(run)
    return run


def run_backup(run_id: int) -> BackupRun:
    """Claim a queued run and back the machine up. Never raises for a failed backup: the run says why."""
    if not BackupRun.objects.filter(pk=run_id, state=RunState.QUEUED).update(
        state=RunState.RUNNING, started_at=timezone.now(), phase="starting"
    ):
        return BackupRun.objects.get(pk=run_id)
    run = BackupRun.objects.select_related(
        "machine__source__credential", "repository__passphrase", "policy"
    ).get(pk=run_id)
    _announce(run)
    try:
        point = _back_up(run)
    except RunCancelled:
        return _finish(run, RunState.CANCELLED, "cancelled by request")
    except BackupRefused as error:
        return _finish(run, RunState.FAILED, str(error))
    except ConnectorError as error:
        return _finish(run, RunState.FAILED, f"{error.code}: {error}")
    except (EngineError, OSError) as error:
        return _finish(run, RunState.FAILED, f"storing failed: {error}")
    except Exception as error:
        logger.exception("backup run %s failed unexpectedly", run.pk)
        return _finish(run, RunState.FAILED, f"unexpected error: {type(error).__name__}: {error}")
    run.refresh_from_db()
    return _finish(run, RunState.COMMITTED, "", point=point)


def _back_up(run: BackupRun) -> RecoveryPoint:
    machine = run.machine
    if machine.platform != "vsphere" or machine.source is None:
        raise BackupRefused(
            f"agentless backups of {machine.get_platform_display()} machines are not available yet"
        )
    engine = repositories.open_repository(run.repository)
    connector: Any = connector_for(machine.source.endpoint(timeout=60.0))
    quiesce = run.policy.quiesce if run.policy else True
    with connector.snapshot(
        machine.external_id, machine.datacenter, name=f"bulwark-run-{run.pk}", quiesce=quiesce
    ) as snap:
        total = sum(disk.capacity_bytes for disk in snap.disks)
        progress = RunProgress(run, total=total)
        progress.send("snapshot taken", 0)
        writer = ImageWriter(engine, machine=machine.identity, tags=[f"run:{run.pk}"], progress=progress)
        try:
            offset = 0
            disks = []
            for disk in snap.disks:
                progress.next_disk(disk.label, offset)
                reader = snap.open_disk(disk)
                try:
                    writer.write_disk(
                        disk.key, reader, size=disk.capacity_bytes, change_id=disk.change_id or None
                    )  # type: ignore[arg-type]
                finally:
                    reader.close()
                offset += disk.capacity_bytes
                disks.append(
                    {
                        "key": disk.key,
                        "label": disk.label,
                        "uuid": disk.uuid,
                        "capacity": disk.capacity_bytes,
                        "change_id": disk.change_id,
                    }
                )
            BackupRun.objects.filter(pk=run.pk).update(state=RunState.COMMITTING)
            progress.send("committing", total)
            snapshot = writer.commit()
        except BaseException:
            writer.abort()
            raise
        consistent = snap.handle.quiesced
    stats = snapshot.stats
    with transaction.atomic():
        point = RecoveryPoint.objects.create(
            machine=machine,
            repository=run.repository,
            run=run,
            snapshot_id=snapshot.id,
            taken_at=snapshot.taken_at,
            kind="image",
            logical_bytes=stats.get("logical_bytes", 0),
            new_bytes=stats.get("new_bytes", 0),
            stored_bytes=stats.get("stored_bytes", 0),
            consistent=consistent,
            disks=disks,
        )
        BackupRun.objects.filter(pk=run.pk).update(
            snapshot_id=snapshot.id,
            bytes_new=stats.get("new_bytes", 0),
            bytes_stored=stats.get("stored_bytes", 0),
            bytes_done=total,
        )
    return point


def _finish(run: BackupRun, state: str, error: str, *, point: RecoveryPoint | None = None) -> BackupRun:
    from protection import services

    with transaction.atomic():
        BackupRun.objects.filter(pk=run.pk).update(
            state=state,
            finished_at=timezone.now(),
            error=error[:5000],
            phase=state if not error else "failed",
        )
        run.refresh_from_db()
        key = f"run-failed:{run.machine_id}"
        if state == RunState.FAILED:
            services.raise_alert(
                kind=AlertKind.RUN_FAILED,
                key=key,
                message=f"Backup of {run.machine.name} failed: {error}",
                severity=Severity.CRITICAL,
                machine=run.machine,
            )
        elif state == RunState.COMMITTED:
            services.resolve_alerts(key=key)
    _announce(run)
    return run


def _announce(run: BackupRun) -> None:
    data = {
        "run": run.pk,
        "state": run.state,
        "phase": run.phase,
        "done": run.bytes_done,
        "total": run.bytes_total,
        "new": run.bytes_new,
        "stored": run.bytes_stored,
        "error": run.error,
    }
    machine = run.machine
    transaction.on_commit(lambda: publish_machine_events("run.state", [(machine, data)]))


def create_repository(
    *, actor: User | None, name: str, kind: str, path: str, passphrase: str = "", **fields: Any
) -> Repository:
    """Create a repository: its passphrase (generated when not given) is stored encrypted, then the engine
    initialises the format and keys at the location."""
    from core.services import create_credential

    credential = create_credential(
        actor=actor,
        name=f"repository {name}",
        kind="repository",
        username="",
        secret=passphrase or repositories.new_passphrase(),
    )
    with transaction.atomic():
        repository = Repository.objects.create(
            name=name, kind=kind, path=path, passphrase=credential, **fields
        )
        repositories.initialise(repository)
        audit.record("repository.create", actor=actor, target=repository, after={"kind": kind, "path": path})
    return repository
