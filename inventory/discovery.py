"""Discovery: a connector's inventory becomes machines, matched by identity, in a handful of queries.

A failed discovery changes nothing but the run and the source's state: machines are marked gone only after a
complete, successful inventory that no longer lists them. A clone has a new identity and so becomes a new
machine; a rename, a move or a vMotion keeps the machine and adds a line to its history.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connectors.base import Change, Connector, ConnectorError, DiscoveredMachine, Endpoint
from connectors.registry import connector_for
from core import audit
from core.events import ADMINS, publish, publish_machine_events
from core.models import User
from inventory.choices import ChangeKind, DiscoveryState, DiscoveryTrigger, SourceState
from inventory.models import DiscoveryRun, Disk, Machine, MachineChange, Source, natural_key

logger = logging.getLogger(__name__)

# Fields a discovery owns (people own owner, jurisdiction and groups; discovery fills jurisdiction only when
# it is empty).
DISCOVERED_FIELDS = (
    "name",
    "sort_name",
    "kind",
    "platform",
    "hostname",
    "guest_os",
    "external_id",
    "bios_uuid",
    "power_state",
    "datacenter",
    "cluster",
    "host",
    "folder",
    "resource_pool",
    "datastores",
    "tags",
    "attributes",
    "ip_addresses",
    "template",
    "facts",
)
PLACEMENT = ("datacenter", "cluster", "host", "folder", "resource_pool")
ConnectorFactory = Callable[[Endpoint], Connector]


@dataclass
class SyncResult:
    found: int = 0
    added: list[Machine] = field(default_factory=list)
    updated: list[Machine] = field(default_factory=list)
    gone: list[Machine] = field(default_factory=list)
    returned: list[Machine] = field(default_factory=list)

    @property
    def touched(self) -> list[Machine]:
        return [*self.added, *self.updated]


# --- queueing ----------------------------------------------------------------------------------------------------
def queue_discovery(
    *, source: Source, actor: User | None, trigger: str = DiscoveryTrigger.MANUAL
) -> DiscoveryRun:
    """Queue a discovery of one source (or return the one already queued or running)."""
    from inventory import tasks

    with transaction.atomic():
        Source.objects.select_for_update().filter(pk=source.pk).first()
        active = DiscoveryRun.objects.filter(
            source=source, state__in=[DiscoveryState.QUEUED, DiscoveryState.RUNNING]
        ).first()
        if active is not None:
            lost = _lost(active)
            if not lost:
                return active
            # Its process died (a console restart, a killed worker) or its task never arrived: it would block
            # every later discovery of this source. It ends with the reason, and a new one is queued.
            DiscoveryRun.objects.filter(pk=active.pk, state=active.state).update(
                state=DiscoveryState.FAILED, finished_at=timezone.now(), error_code="lost", error=lost
            )
        run = DiscoveryRun.objects.create(source=source, trigger=trigger, requested_by=actor)
        if trigger == DiscoveryTrigger.MANUAL:
            audit.record("discovery.start", actor=actor, target=source)
        transaction.on_commit(lambda: tasks.discover.delay(run.pk))
    _publish_run(run)
    return run


def queue_due_discoveries(*, now: datetime.datetime | None = None) -> list[DiscoveryRun]:
    """Queue every enabled source whose interval has passed since its last attempt."""
    now = now or timezone.now()
    runs = []
    for source in Source.objects.filter(enabled=True):
        due = source.last_attempt_at is None or (
            now - source.last_attempt_at >= datetime.timedelta(minutes=source.discovery_interval_minutes)
        )
        if due:
            runs.append(queue_discovery(source=source, actor=None, trigger=DiscoveryTrigger.SCHEDULE))
    return runs


def _lost(run: DiscoveryRun) -> str:
    """Why an unfinished run will never finish (empty if it may): its worker on this host is no longer alive,
    or it gave no sign of life for BULWARK_RUN_STALE_SECONDS (queued: its task message was lost)."""
    stale = timezone.now() - datetime.timedelta(seconds=settings.BULWARK_RUN_STALE_SECONDS)
    if run.state == DiscoveryState.QUEUED:
        return "its task never reached a worker (lost in a restart)" if run.queued_at < stale else ""
    host, _, pid = run.worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return f"the process running it ({run.worker}) is gone"
    last = run.heartbeat_at or run.started_at or run.queued_at
    if last < stale:
        return f"the worker running it ({run.worker or 'unknown'}) stopped giving signs of life"
    return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- running -----------------------------------------------------------------------------------------------------
class RunProgress:
    """Progress of a discovery, to the admins' event stream (at most a few messages a second)."""

    def __init__(self, run: DiscoveryRun, *, interval: float = 0.25) -> None:
        self.run = run
        self.interval = interval
        self._last = 0.0
        self._phase = ""

    def step(self, done: int, total: int | None, phase: str) -> None:
        # Counts are throttled; a new phase always gets through (a failed run shows the step it failed in).
        now = time.monotonic()
        new_phase = phase != self._phase
        if not new_phase and now - self._last < self.interval and not (total is not None and done >= total):
            return
        self._last, self._phase = now, phase
        DiscoveryRun.objects.filter(pk=self.run.pk).update(phase=phase[:100], heartbeat_at=timezone.now())
        publish(
            "discovery.progress",
            {"run": self.run.pk, "source": self.run.source_id, "done": done, "total": total, "phase": phase},
            groups=[ADMINS],
        )


def run_discovery(run_id: int, *, factory: ConnectorFactory = connector_for) -> DiscoveryRun:
    """Claim a queued run and discover its source. A second delivery of the same message does nothing."""
    now = timezone.now()
    if not DiscoveryRun.objects.filter(pk=run_id, state=DiscoveryState.QUEUED).update(
        state=DiscoveryState.RUNNING, started_at=now, heartbeat_at=now, worker=_worker()
    ):
        return DiscoveryRun.objects.get(pk=run_id)
    run = DiscoveryRun.objects.select_related("source", "source__credential").get(pk=run_id)
    source = run.source
    Source.objects.filter(pk=source.pk).update(last_attempt_at=now)
    _publish_run(run)
    try:
        inventory = factory(source.endpoint()).discover(RunProgress(run))
    except ConnectorError as error:
        return _fail(run, error.code, str(error))
    except Exception as error:  # a bug or an unexpected answer: the run says so, the inventory stays
        logger.exception("discovery of source %s failed unexpectedly", source.pk)
        return _fail(run, "internal", f"unexpected error: {type(error).__name__}: {error}")
    with transaction.atomic():
        # The inventory, its groups and its protection are one write: a console killed in the middle leaves
        # all of it or none (a machine committed without its rules would stay unprotected, since the next
        # discovery sees it unchanged), and the discovery the restarted watch queues does it again.
        result = apply_inventory(source, inventory.machines, complete=True, read_since=now)
        _after_sync(result)
        run.state = DiscoveryState.SUCCEEDED
        run.finished_at = timezone.now()
        run.phase = "done"
        run.found = result.found
        run.added, run.updated = len(result.added), len(result.updated)
        run.gone, run.returned = len(result.gone), len(result.returned)
        run.save()
        Source.objects.filter(pk=source.pk).update(
            state=SourceState.OK,
            last_error="",
            last_success_at=run.finished_at,
            product=inventory.product[:255],
            remote_id=inventory.source_id[:100],
            topology=inventory.topology,
        )
        from protection import services as protection

        protection.resolve_alerts(key=f"discovery:{source.pk}")
        _flag_duplicate_source(source, inventory.source_id)
    _publish_run(run)
    return run


def _flag_duplicate_source(source: Source, remote_id: str) -> None:
    """Two sources whose endpoints report one instance id: the same vCenter added twice (every VM listed and
    backed up twice), or a cloned appliance. Machines stay apart either way; an admin is told to decide."""
    from protection import services as protection
    from protection.choices import AlertKind, Severity

    key = f"duplicate-source:{source.pk}"
    twins = list(Source.objects.filter(remote_id=remote_id).exclude(pk=source.pk)) if remote_id else []
    if not twins:
        protection.resolve_alerts(key=key)
        return
    names = ", ".join(f"{twin.name} ({twin.address})" for twin in twins)
    protection.raise_alert(
        kind=AlertKind.DUPLICATE_SOURCE,
        key=key,
        message=(
            f"Source {source.name} ({source.address}) reports the same instance id as {names}. If they are one "
            "vCenter, delete one of the sources: its VMs are listed, protected and backed up twice. If it is a "
            "copy of that appliance, its VMs are kept as machines of their own."
        ),
        severity=Severity.WARNING,
        source=source,
    )


def _fail(run: DiscoveryRun, code: str, reason: str) -> DiscoveryRun:
    from protection import services as protection
    from protection.choices import AlertKind, Severity

    with transaction.atomic():
        run.state = DiscoveryState.FAILED
        run.finished_at = timezone.now()
        run.error_code, run.error = code, reason
        # The phase it failed in stays (progress wrote it with an UPDATE this object has not seen).
        run.save(update_fields=["state", "finished_at", "error_code", "error"])
        Source.objects.filter(pk=run.source_id).update(state=SourceState.FAILED, last_error=reason)
        protection.raise_alert(
            kind=AlertKind.DISCOVERY_FAILED,
            key=f"discovery:{run.source_id}",
            message=f"Discovery of {run.source.name} failed: {reason}",
            severity=Severity.CRITICAL,
            source=run.source,
        )
    _publish_run(run)
    return run


def _publish_run(run: DiscoveryRun) -> None:
    data = {
        "run": run.pk,
        "source": run.source_id,
        "state": run.state,
        "found": run.found,
        "added": run.added,
        "gone": run.gone,
        "error": run.error,
    }
    transaction.on_commit(lambda: publish("discovery.state", data, groups=[ADMINS]))


# --- applying an inventory ---------------------------------------------------------------------------------------
def _values(source: Source, discovered: DiscoveredMachine) -> dict[str, Any]:
    return {
        "name": discovered.name[:255],
        "sort_name": natural_key(discovered.name[:255]),
        "kind": discovered.kind,
        "platform": discovered.platform,
        "hostname": discovered.hostname[:255],
        "guest_os": discovered.guest_os[:255],
        "external_id": discovered.external_id[:200],
        "bios_uuid": discovered.bios_uuid[:64],
        "power_state": discovered.power_state[:32],
        "datacenter": discovered.datacenter[:255],
        "cluster": discovered.cluster[:255],
        "host": discovered.host[:255],
        "folder": discovered.folder[:1000],
        "resource_pool": discovered.resource_pool[:1000],
        "datastores": list(discovered.datastores),
        "tags": list(discovered.tags),
        "attributes": dict(discovered.attributes),
        "ip_addresses": list(discovered.ip_addresses),
        "template": discovered.template,
        "facts": {
            **discovered.facts,
            **({"checkpoints": discovered.checkpoints} if discovered.checkpoints else {}),
        },
    }


def _describe_changes(machine: Machine, values: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """History lines for what changed: (kind, summary, detail)."""
    lines = []
    if values["name"] != machine.name:
        lines.append(
            (ChangeKind.RENAMED, f"renamed from {machine.name} to {values['name']}", {"from": machine.name})
        )
    moved = {
        key: (getattr(machine, key), values[key]) for key in PLACEMENT if getattr(machine, key) != values[key]
    }
    if moved:
        if set(moved) == {"host"}:
            summary = f"moved from host {moved['host'][0] or '?'} to {moved['host'][1] or '?'} (vMotion / live migration)"
        else:
            summary = "moved: " + ", ".join(
                f"{key.replace('_', ' ')} {old or '-'} → {new or '-'}" for key, (old, new) in moved.items()
            )
        lines.append((ChangeKind.MOVED, summary, {key: list(pair) for key, pair in moved.items()}))
    return lines


@transaction.atomic
def apply_inventory(
    source: Source,
    machines: Iterable[DiscoveredMachine],
    *,
    complete: bool,
    read_since: datetime.datetime | None = None,
) -> SyncResult:
    """Upsert discovered machines by identity. With `complete` (a whole, successful inventory), machines of
    this source that it no longer lists are marked gone. A fixed number of queries, whatever the count.

    `read_since` is when the connector began reading: the watch may have seen newer facts since then. A
    machine first seen, last seen or marked gone after that moment keeps what the watch recorded (the
    inventory's copy is older), and is never marked gone by this inventory."""
    now = timezone.now()
    discovered = {m.identity: m for m in machines}
    result = SyncResult(found=len(discovered))
    # Identities are the source's own: another source reporting the same one has a machine of its own.
    existing = {
        m.native_identity: m
        for m in Machine.objects.filter(source=source, native_identity__in=list(discovered))
    }
    elsewhere = _identities_elsewhere(source, [i for i in discovered if i not in existing])
    history: list[MachineChange] = []
    new: list[Machine] = []
    changed: list[Machine] = []
    unchanged: list[Machine] = []
    for identity, item in discovered.items():
        values = _values(source, item)
        machine = existing.get(identity)
        if machine is not None and read_since is not None and _newer_than(machine, read_since):
            continue
        if machine is None:
            orphan = elsewhere.get(identity)
            if orphan is not None and orphan.source_id is None and orphan.platform == item.platform:
                # Its source was deleted, and a source reports it again (the same vCenter added anew).
                machine = orphan
                lines_before = [
                    (ChangeKind.MOVED, f"reported again, now by source {source.name}", {"source": source.pk})
                ]
                machine.source = source
            else:
                taken = orphan is not None  # a machine with this native identity holds it as its identity
                machine = Machine(
                    identity=f"{identity}@{source.pk}" if taken else identity,
                    native_identity=identity,
                    source=source,
                    jurisdiction=source.jurisdiction,
                    first_seen=now,
                    last_seen=now,
                    **values,
                )
                new.append(machine)
                if orphan is not None:
                    history.append(
                        MachineChange(
                            machine=machine,
                            at=now,
                            kind=ChangeKind.DISCOVERED,
                            summary=f"same platform identity as {orphan.name} of source "
                            f"{orphan.source.name if orphan.source else '?'}: kept as a machine of its own",
                        )
                    )
                continue
        else:
            lines_before = []
        lines = lines_before + _describe_changes(machine, values)
        dirty = bool(lines_before) or any(getattr(machine, key) != value for key, value in values.items())
        if machine.gone_since is not None:
            lines.append(
                (
                    ChangeKind.RETURNED,
                    f"seen again after being gone since {machine.gone_since:%Y-%m-%d %H:%M}",
                    {},
                )
            )
            machine.gone_since = None
            result.returned.append(machine)
            dirty = True
        for key, value in values.items():
            setattr(machine, key, value)
        if not machine.jurisdiction and source.jurisdiction:
            machine.jurisdiction = source.jurisdiction
        machine.last_seen = now
        history += [
            MachineChange(machine=machine, at=now, kind=k, summary=s[:500], detail=d) for k, s, d in lines
        ]
        if dirty:
            result.updated.append(machine)
            changed.append(machine)
        else:
            unchanged.append(machine)
    Machine.objects.bulk_create(new, batch_size=500)
    result.added = new
    history += [
        MachineChange(
            machine=m, at=now, kind=ChangeKind.DISCOVERED, summary=f"discovered in {source.name}"[:500]
        )
        for m in new
    ]
    if changed:
        Machine.objects.bulk_update(
            changed, [*DISCOVERED_FIELDS, "gone_since", "source", "jurisdiction", "last_seen"], batch_size=500
        )
    for start in range(0, len(unchanged), 900):  # only "seen now" for the rest: one short UPDATE per batch
        Machine.objects.filter(pk__in=[m.pk for m in unchanged[start : start + 900]]).update(last_seen=now)
    _sync_disks([*new, *changed, *unchanged], discovered)
    if complete:
        candidates = Machine.objects.filter(source=source, gone_since__isnull=True)
        if read_since is not None:  # created or seen by the watch while this inventory was read: not missing
            candidates = candidates.filter(first_seen__lt=read_since, last_seen__lt=read_since)
        missing = list(candidates.exclude(identity__in=list(discovered)))
        for machine in missing:
            machine.gone_since = now
            history.append(
                MachineChange(
                    machine=machine, at=now, kind=ChangeKind.GONE, summary=f"no longer in {source.name}"
                )
            )
        if missing:
            Machine.objects.filter(pk__in=[m.pk for m in missing]).update(gone_since=now)
        result.gone = missing
    MachineChange.objects.bulk_create(history, batch_size=500)
    return result


def _identities_elsewhere(source: Source, identities: list[str]) -> dict[str, Machine]:
    """Machines of other sources (or of a deleted one) with these native identities: a deleted source's machine
    first, as it is the one to adopt."""
    found: dict[str, Machine] = {}
    for start in range(0, len(identities), 900):
        for machine in (
            Machine.objects.filter(native_identity__in=identities[start : start + 900])
            .exclude(source=source)
            .select_related("source")
            .order_by("-source")  # NULL (a deleted source) last in this order: the loop keeps it
        ):
            if machine.native_identity not in found or machine.source_id is None:
                found[machine.native_identity] = machine
    return found


def _newer_than(machine: Machine, moment: datetime.datetime) -> bool:
    return machine.last_seen >= moment or (machine.gone_since is not None and machine.gone_since >= moment)


def _sync_disks(machines: list[Machine], discovered: dict[str, DiscoveredMachine]) -> None:
    by_machine: dict[int, dict[str, Disk]] = {}
    for disk in Disk.objects.filter(machine__in=[m.pk for m in machines]):
        by_machine.setdefault(disk.machine_id, {})[disk.key] = disk
    create, update, delete = [], [], []
    for machine in machines:
        have = by_machine.get(machine.pk, {})
        want = {d.key: d for d in discovered[machine.native_identity].disks}
        for key, item in want.items():
            values = {
                "label": item.label[:255],
                "capacity_bytes": item.capacity_bytes,
                "path": item.path[:1000],
                "change_tracking": item.change_tracking,
            }
            disk = have.get(key)
            if disk is None:
                create.append(Disk(machine=machine, key=key[:100], **values))
            elif any(getattr(disk, k) != v for k, v in values.items()):
                for k, v in values.items():
                    setattr(disk, k, v)
                update.append(disk)
        delete += [disk.pk for key, disk in have.items() if key not in want]
    if delete:
        Disk.objects.filter(pk__in=delete).delete()
    Disk.objects.bulk_create(create, batch_size=500)
    if update:
        Disk.objects.bulk_update(
            update, ["label", "capacity_bytes", "path", "change_tracking"], batch_size=500
        )


def apply_changes(source: Source, changes: list[Change]) -> SyncResult:
    """What a watch saw, in the order it happened: upserts (new, cloned, renamed, moved VMs) and confirmed
    removals. Consecutive upserts are applied together; a removal applies after the upserts before it."""
    result = SyncResult()
    with transaction.atomic():
        pending: list[DiscoveredMachine] = []
        for change in [*changes, None]:
            if change is not None and change.kind == "upsert" and change.machine is not None:
                pending.append(change.machine)
                continue
            if pending:
                step = apply_inventory(source, pending, complete=False)
                result.found += step.found
                result.added += step.added
                result.updated += step.updated
                result.returned += step.returned
                pending = []
            if change is not None and change.kind == "remove" and change.external_id:
                result.gone += _mark_removed(source, change.external_id)
        _after_sync(result)  # in the same transaction: a batch is applied with its rules, or not at all
    return result


def _mark_removed(source: Source, external_id: str) -> list[Machine]:
    now = timezone.now()
    gone = list(Machine.objects.filter(source=source, external_id=external_id, gone_since__isnull=True))
    Machine.objects.filter(pk__in=[m.pk for m in gone]).update(gone_since=now)
    MachineChange.objects.bulk_create(
        MachineChange(machine=m, at=now, kind=ChangeKind.GONE, summary=f"removed from {source.name}")
        for m in gone
    )
    return gone


def _after_sync(result: SyncResult) -> None:
    """Rules for new and changed machines (a clone is protected now, not at the next schedule); live events.
    Called inside the transaction that wrote the inventory (the events go once it commits)."""
    from protection import services as protection

    if result.touched or result.gone:
        from inventory.services import sync_group_rules

        sync_group_rules(machines=[*result.touched, *result.gone])  # scopes first: rules may match groups
    if result.touched:
        protection.apply_rules(result.touched)
    added = [(m, {"name": m.name}) for m in result.added]
    changed = [(m, {"name": m.name}) for m in [*result.updated, *result.gone]]
    transaction.on_commit(lambda: publish_machine_events("machine.discovered", added))
    transaction.on_commit(lambda: publish_machine_events("machine.changed", changed))


def test_source(source: Source, *, timeout: float = 15.0, factory: ConnectorFactory = connector_for) -> str:
    """Connect and log in now; returns what answered, or raises ConnectorError with the reason."""
    return factory(source.endpoint(timeout=timeout)).test()
