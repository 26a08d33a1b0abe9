"""What follows a committed point: copies to the policy's other tiers, the GFS retention of each repository,
and prune (reclaiming the space of what retention forgot)."""

from __future__ import annotations

import logging

from django.db import transaction

from catalog import repositories, tasks
from catalog.choices import CatalogState
from catalog.indexer import catalog_point, forget_points
from catalog.models import RecoveryPoint, Repository
from engine.copy import copy_snapshot
from engine.errors import EngineError
from engine.prune import prune
from engine.retention import RetentionSpec, plan_retention
from inventory.models import Machine
from protection.choices import AlertKind, Severity
from protection.models import CopyTarget, Policy

logger = logging.getLogger(__name__)


def retention_spec(policy: Policy | CopyTarget) -> RetentionSpec:
    return RetentionSpec(
        last=policy.keep_last,
        daily=policy.keep_daily,
        weekly=policy.keep_weekly,
        monthly=policy.keep_monthly,
        yearly=policy.keep_yearly,
    )


def after_commit(point: RecoveryPoint, policy: Policy, *, catalog_now: bool = True) -> None:
    """What follows every committed point: its file catalog (in this task for a worker's backup; queued when the
    commit came through an agent's request), copies to the next tiers, then the policy's retention."""
    if catalog_now:
        catalog_point(point)
    else:
        transaction.on_commit(lambda: tasks.catalog_point.delay(point.pk))
    copy_to_targets(point)
    try:
        apply_retention(machine=point.machine, policy=policy, repository=point.repository)
    except (EngineError, OSError, ValueError):
        logger.exception("retention after point %s failed; the next run tries again", point.pk)


def apply_retention(*, machine: Machine, policy: Policy | CopyTarget, repository: Repository) -> list[str]:
    """Forget the machine's snapshots the policy's GFS retention no longer keeps (their data goes at the next
    prune); their recovery points go with them. Returns the forgotten snapshot ids."""
    spec = retention_spec(policy)
    if spec.keeps_nothing:
        return []
    engine = repositories.open_repository(repository)
    snapshots = [snapshot for snapshot in engine.snapshots() if snapshot.machine == machine.identity]
    forgotten = []
    # Per kind: an agent's file snapshots and its volume images are kept each by their own count.
    for kind in sorted({snapshot.kind for snapshot in snapshots}):
        for decision in plan_retention([s for s in snapshots if s.kind == kind], spec):
            if not decision.keep:
                engine.forget_snapshot(decision.snapshot.id)
                forgotten.append(decision.snapshot.id)
    gone = RecoveryPoint.objects.filter(repository=repository, snapshot_id__in=forgotten)
    forget_points(gone)  # narrow the catalog's intervals first: nothing may name a deleted point
    gone.delete()
    return forgotten


def prune_repository(repository: Repository) -> dict[str, int]:
    """Reclaim the space of forgotten snapshots (two-phase, safe beside running backups)."""
    report = prune(repositories.open_repository(repository))
    return {
        "marked_packs": len(report.marked_packs),
        "deleted_packs": len(report.deleted_packs),
        "repacked_packs": len(report.repacked_packs),
        "freed_bytes": report.freed_bytes,
    }


def copy_to_targets(point: RecoveryPoint) -> list[RecoveryPoint]:
    """Copy a committed recovery point to each copy target of its run's policy (chunks re-keyed for the
    target; S3 targets with Object Lock keep them immutable), then apply the target's own retention. A target
    that fails is retried with the next run: copies skip what the target already holds."""
    from protection import services

    copies = []
    run = point.run
    if run is None or run.policy is None:
        return copies
    source, snapshot = repositories.open_point(point)
    for target in CopyTarget.objects.filter(policy=run.policy).select_related("repository__passphrase"):
        key = f"copy:{point.machine_id}:{target.repository_id}"
        try:
            destination = repositories.open_repository(target.repository)
            copied, stats = copy_snapshot(source, destination, snapshot)
            copy, _ = RecoveryPoint.objects.get_or_create(
                repository=target.repository,
                snapshot_id=copied.id,
                defaults={
                    "machine": point.machine,
                    "taken_at": point.taken_at,
                    "kind": point.kind,
                    "logical_bytes": point.logical_bytes,
                    "new_bytes": stats.new_bytes,
                    "stored_bytes": stats.stored_bytes,
                    "consistent": point.consistent,
                    "disks": point.disks,
                    "catalog_state": CatalogState.NONE,  # the original point holds the catalog
                },
            )
            copies.append(copy)
            apply_retention(machine=point.machine, policy=target, repository=target.repository)
            services.resolve_alerts(key=key)
        except (EngineError, OSError) as error:
            services.raise_alert(
                kind=AlertKind.RUN_FAILED,
                key=key,
                message=f"Copy of {point.machine.name} to {target.repository.name} failed: {error}",
                severity=Severity.CRITICAL,
                machine=point.machine,
            )
    return copies
