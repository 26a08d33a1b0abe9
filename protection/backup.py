"""Backup runs: queue, claim, snapshot, read, write through the engine, commit, and always clean up.

A run is claimed with a conditional update (queued → running), so a message delivered twice does nothing. A run
that fails or is cancelled commits no snapshot; what it already stored stays in the repository and the next run
reuses it (the engine deduplicates against every pack confirmed stored).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog import repositories
from catalog.choices import PointKind
from catalog.models import RecoveryPoint
from catalog.services import record_point
from connectors.base import ChangeIdRejected, ConnectorError
from connectors.registry import connector_for
from core import audit
from core.events import publish_machine_events
from core.models import User
from engine.errors import EngineError
from engine.image import ImageWriter
from inventory.models import Agent, Machine
from protection.choices import ACTIVE_RUN_STATES, AlertKind, BackupMode, RunState, RunTrigger, Severity
from protection.dispatch import dispatch
from protection.models import Assignment, BackupRun, Policy
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
    if policy is None:
        assignment = Assignment.objects.filter(machine=machine).select_related("policy__repository").first()
        policy = assignment.policy if assignment else None
    if policy is None:
        raise BackupRefused(f"{machine.name} has no protection policy")
    if policy.repository is None:
        raise BackupRefused(f"policy {policy.name} names no repository")
    if machine.gone_since is not None:
        raise BackupRefused(f"{machine.name} is gone from its source")
    if policy.mode == BackupMode.AGENT:
        if not Agent.objects.filter(machine=machine, revoked_at__isnull=True).exists():
            raise BackupRefused(
                f"{machine.name} has no enrolled agent, and policy {policy.name} backs up by agent"
            )
        if not (policy.include_paths.strip() or policy.volumes.strip()):
            raise BackupRefused(f"policy {policy.name} names no paths or volumes for the agent to back up")
    active = BackupRun.objects.filter(machine=machine, state__in=ACTIVE_RUN_STATES).first()
    if active is not None:
        return active
    run = BackupRun.objects.create(
        machine=machine,
        policy=policy,
        repository=policy.repository,
        trigger=trigger,
        requested_by=requested_by,
        phase="waiting for the agent to pick it up" if policy.mode == BackupMode.AGENT else "",
    )
    if requested_by is not None:
        audit.record(
            "backup.start", actor=requested_by, target=machine, after={"run": run.pk, "policy": policy.name}
        )
    _announce(run)
    transaction.on_commit(dispatch)
    return run


def back_up_now(*, machines: Iterable[Machine], requested_by: User) -> tuple[int, list[str]]:
    """A person's "back up now" for several machines: (how many were queued, "name: why" for those refused)."""
    queued, refused = 0, []
    for machine in machines:
        try:
            start_backup(machine=machine, requested_by=requested_by)
            queued += 1
        except BackupRefused as error:
            refused.append(f"{machine.name}: {error}")
    return queued, refused


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


def run_backup(run_id: int, *, worker: str = "") -> BackupRun:
    """Claim a queued run and back the machine up. Never raises for a failed backup: the run says why."""
    if not BackupRun.objects.filter(pk=run_id, state__in=[RunState.QUEUED, RunState.WAITING]).update(
        state=RunState.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        phase="starting",
        worker=worker[:200],
    ):
        return BackupRun.objects.get(pk=run_id)
    run = BackupRun.objects.select_related(
        "machine__source__credential", "repository__passphrase", "policy__guest_credential"
    ).get(pk=run_id)
    _announce(run)
    try:
        point, warnings = _back_up(run)
    except RunCancelled:
        return _finish(run, RunState.CANCELLED, "")
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
    finished = _finish(run, RunState.COMMITTED, "", warning="; ".join(warnings))
    if run.policy is not None:
        from protection.retention import after_commit

        after_commit(point, run.policy)
    return finished


@dataclass
class DiskPlan:
    disk: Any
    areas: list[tuple[int, int]] | None  # None: read the whole disk
    reason: str  # why a whole read (empty for changed areas)

    @property
    def bytes(self) -> int:
        return self.disk.capacity_bytes if self.areas is None else sum(length for _, length in self.areas)


def _previous_point(run: BackupRun) -> RecoveryPoint | None:
    return (
        RecoveryPoint.objects.filter(machine=run.machine, repository=run.repository, kind=PointKind.IMAGE)
        .order_by("-taken_at", "-pk")
        .first()
    )


def _full_read_due(run: BackupRun) -> bool:
    """A periodic full read guards against changed-block tracking faults."""
    days = run.policy.full_every_days if run.policy else 30
    if not days:
        return False
    for point in RecoveryPoint.objects.filter(machine=run.machine, repository=run.repository).order_by(
        "-taken_at"
    )[:500]:
        if point.disks and all(d.get("full_read") for d in point.disks):
            return timezone.now() - point.taken_at >= datetime.timedelta(days=days)
    return True


def _plan(run: BackupRun, snap: Any, previous: RecoveryPoint | None, parent: Any) -> list[DiskPlan]:
    """For each disk: its changed areas since the last committed point, or why every block is read. A change id
    is trusted only for the disk it was issued for (same key, UUID and capacity), never right after CBT was
    enabled, and never when a periodic full read is due."""
    full_due = _full_read_due(run)
    plans = []
    for disk in snap.disks:
        before = next((d for d in (previous.disks if previous else []) if d.get("key") == disk.key), None)
        reason = ""
        if parent is None or before is None:
            reason = "no earlier recovery point of this disk"
        elif snap.tracking_just_enabled:
            reason = "changed-block tracking was just enabled"
        elif not before.get("change_id") or not disk.change_id:
            reason = "no change id"
        elif before.get("capacity") != disk.capacity_bytes:
            reason = "the disk was resized"
        elif (before.get("uuid") or "") != (disk.uuid or ""):
            reason = "a different disk (UUID changed)"
        elif disk.key not in {d["name"] for d in parent.disks}:
            reason = "the earlier snapshot lacks this disk"
        elif full_due:
            reason = "periodic full read"
        areas = None
        if not reason:
            try:
                areas = snap.changed_areas(disk, before["change_id"])
            except ChangeIdRejected as error:
                reason = str(error)
                from protection import services

                services.raise_alert(
                    kind=AlertKind.CBT_RESET,
                    key=f"cbt-reset:{run.machine_id}:{disk.key}",
                    message=f"{run.machine.name}: {error}; reading the whole disk",
                    severity=Severity.WARNING,
                    machine=run.machine,
                )
        plans.append(DiskPlan(disk, areas, reason))
    return plans


def _back_up(run: BackupRun) -> tuple[RecoveryPoint, list[str]]:
    """Back the machine up; the committed point, and warnings the snapshot gave (a failed post-script)."""
    machine = run.machine
    if machine.platform not in ("vsphere", "hyperv") or machine.source is None:
        raise BackupRefused(
            f"agentless backups of {machine.get_platform_display()} machines are not available yet"
        )
    engine = repositories.open_repository(run.repository)
    connector: Any = connector_for(machine.source.endpoint(timeout=60.0))
    quiesce = run.policy.quiesce if run.policy else True
    previous = _previous_point(run)
    parent = None
    if previous is not None:
        try:
            parent = engine.load_snapshot(previous.snapshot_id)
        except EngineError:
            parent = None  # pruned or damaged: this run reads every block
    hooks: dict[str, Any] = {}
    if run.policy and (run.policy.pre_script.strip() or run.policy.post_script.strip()):
        hooks = {"pre_script": run.policy.pre_script, "post_script": run.policy.post_script}
        if machine.platform == "vsphere":
            credential = run.policy.guest_credential
            if credential is None:
                raise BackupRefused(
                    f"policy {run.policy.name} has scripts for the guest but no guest login to run them with"
                )
            from connectors.vsphere.guest import GuestLogin

            hooks["guest_login"] = GuestLogin(credential.username, credential.reveal())
    progress = RunProgress(run, total=0)
    progress.check_cancel(now=True)  # cancelled while it was being claimed: no snapshot at all
    with connector.snapshot(
        machine.external_id, machine.datacenter, name=f"bulwark-run-{run.pk}", quiesce=quiesce, **hooks
    ) as snap:
        for step in snap.steps:  # scripts, the snapshot or checkpoint, in the order they happened
            note_step(run, step)
        for warning in snap.warnings:
            note_step(run, f"warning: {warning}")
        progress.check_cancel(now=True)  # a snapshot (a quiesced one above all) may take minutes
        plans = _plan(run, snap, previous, parent)
        for plan in plans:
            if plan.areas is None:
                note_step(run, f"disk '{plan.disk.label}': every block is read ({plan.reason})")
            else:
                note_step(
                    run,
                    f"disk '{plan.disk.label}': {len(plan.areas)} changed area(s), {_size(plan.bytes)} to read (CBT)",
                )
        total = sum(plan.bytes for plan in plans)
        full = any(plan.areas is None for plan in plans)
        BackupRun.objects.filter(pk=run.pk).update(full_read=full, bytes_total=total)
        progress.total = total
        progress.send("snapshot taken", 0)
        writer = ImageWriter(
            engine, machine=machine.identity, parent=parent, tags=[f"run:{run.pk}"], progress=progress
        )
        try:
            offset = 0
            disks = []
            for plan in plans:
                disk = plan.disk
                progress.next_disk(disk.label, offset)
                progress.check_cancel(now=True)
                limit = run.policy.bandwidth_limit_mbps if run.policy else None
                reader = snap.open_disk(
                    disk, bytes_per_second=limit * 125_000 if limit else None, check=progress.check_cancel
                )
                try:
                    if plan.areas is None:
                        writer.write_disk(
                            disk.key, reader, size=disk.capacity_bytes, change_id=disk.change_id or None
                        )  # type: ignore[arg-type]
                    else:
                        writer.write_disk_areas(
                            disk.key,
                            reader,
                            size=disk.capacity_bytes,
                            areas=plan.areas,
                            change_id=disk.change_id or None,
                        )  # type: ignore[arg-type]
                finally:
                    reader.close()
                offset += plan.bytes
                disks.append(
                    {
                        "key": disk.key,
                        "label": disk.label,
                        "uuid": disk.uuid,
                        "capacity": disk.capacity_bytes,
                        "change_id": disk.change_id,
                        "full_read": plan.areas is None,
                        "read_bytes": plan.bytes,
                        "why_full": plan.reason,
                    }
                )
            progress.check_cancel(now=True)  # the last moment a cancel stops the run: committing is short
            BackupRun.objects.filter(pk=run.pk).update(state=RunState.COMMITTING)
            progress.send("committing", total)
            snapshot = writer.commit()
        except BaseException:
            writer.abort()
            raise
        consistent = snap.handle.quiesced
        warnings = list(snap.warnings) + list(snapshot.warnings)
    noun = "checkpoint" if machine.platform == "hyperv" else "snapshot"
    note_step(run, f"{noun} removed; recovery point {snapshot.id} committed")
    stats = snapshot.stats
    with transaction.atomic():
        point = record_point(
            machine=machine,
            repository=run.repository,
            run_id=run.pk,
            snapshot=snapshot,
            kind=PointKind.IMAGE,
            consistent=consistent,
            disks=disks,
        )
        BackupRun.objects.filter(pk=run.pk).update(
            snapshot_id=snapshot.id,
            bytes_new=stats.get("new_bytes", 0),
            bytes_stored=stats.get("stored_bytes", 0),
            bytes_done=total,
        )
    return point, warnings


def _size(count: int) -> str:
    from django.template.defaultfilters import filesizeformat

    return str(filesizeformat(count))


def reap_stale_runs(*, now: datetime.datetime | None = None) -> list[BackupRun]:
    """Runs whose worker stopped giving signs of life (killed, crashed, host lost) fail with that reason, so
    their stream is freed and the scheduler retries them. What they stored stays; the next run reuses it."""
    now = now or timezone.now()
    stale_before = now - datetime.timedelta(seconds=settings.BULWARK_RUN_STALE_SECONDS)
    reaped = []
    for run in BackupRun.objects.filter(
        state__in=[RunState.RUNNING, RunState.COMMITTING], heartbeat_at__lt=stale_before
    ).select_related("machine"):
        if BackupRun.objects.filter(pk=run.pk, state__in=[RunState.RUNNING, RunState.COMMITTING]).update(
            state=RunState.QUEUED  # a transient state: _finish below marks it failed
        ):
            reaped.append(
                _finish(
                    run,
                    RunState.FAILED,
                    f"the worker running it ({run.worker or 'unknown'}) stopped giving signs of life",
                )
            )
    return reaped


def note_step(run: BackupRun, text: str) -> None:
    """Add a line to the run's step log (one writer per run: the worker running it)."""
    steps = BackupRun.objects.filter(pk=run.pk).values_list("steps", flat=True).first() or []
    steps = [*steps, {"at": timezone.now().isoformat(), "text": text[:500]}][-200:]
    BackupRun.objects.filter(pk=run.pk).update(steps=steps)


def _finish(run: BackupRun, state: str, error: str, *, warning: str = "") -> BackupRun:
    """End a run. A warning (a post-script failed, paths skipped) stays in the committed run's phase."""
    from protection import services

    if state == RunState.CANCELLED:
        # One state: a cancelled run is "cancelled", not also "failed" with a red error.
        phase, error = "cancelled", ""
        note_step(run, "cancelled on request")
    else:
        phase = "failed" if error else f"{state} with warnings: {warning}" if warning else state
    now = timezone.now()
    with transaction.atomic():
        current = BackupRun.objects.filter(pk=run.pk).values("started_at", "bytes_done").first() or {}
        started, done = current.get("started_at"), current.get("bytes_done") or 0
        # The final rate is what the run moved over its wall time, not the last instant's (a throttled run
        # must not end showing the speed of its last burst).
        wall = (now - started).total_seconds() if started else 0.0
        final_rate = done / wall if wall > 0 else 0.0
        BackupRun.objects.filter(pk=run.pk).update(
            state=state, finished_at=now, error=error[:5000], phase=phase[:200], rate=final_rate
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
    transaction.on_commit(dispatch)  # a stream is free: start what waits
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
