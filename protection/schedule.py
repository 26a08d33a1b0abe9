"""Periodic protection work: start due backups (with retries and back-off), check RPOs, repositories and proxies.

Each function is called by a thin Celery task on django-celery-beat's schedule (config/settings.py) and is safe
to run twice at once: starting a backup returns the machine's active run instead of queueing a second.
"""

from __future__ import annotations

import datetime
import logging

from django.db import connection
from django.db.models import Max
from django.utils import timezone

from catalog import repositories
from catalog.models import Repository
from inventory.models import Machine
from protection.backup import BackupRefused, start_backup
from protection.choices import AlertKind, RunState, RunTrigger, Severity
from protection.cron import parse_cron
from protection.models import BackupRun, Policy

logger = logging.getLogger(__name__)

RETRY_ATTEMPTS = 3
RETRY_BASE = datetime.timedelta(minutes=5)


def retry_delay(attempt: int) -> datetime.timedelta:
    """5, 10, 20 minutes... after a failed attempt."""
    return RETRY_BASE * (2 ** max(0, attempt - 1))


def _cron_due(policy: Policy, last_queued: datetime.datetime, now: datetime.datetime) -> bool:
    """Whether a fire time of the policy's cron schedule (server time) passed since the last run was queued."""
    local_now = timezone.localtime(now)
    schedule = parse_cron(policy.schedule_cron)
    schedule.nowfun = lambda: local_now
    return bool(schedule.is_due(timezone.localtime(last_queued)).is_due)


def schedule_due(*, now: datetime.datetime | None = None) -> list[BackupRun]:
    """Queue a backup for every protected machine whose policy interval (or a cron fire time) has passed since its
    last run, and a retry (with back-off) for one whose last run failed. A machine's first backup waits for the
    policy's schedule (a cron fire time after the assignment) and window. Higher-priority policies go first."""
    now = now or timezone.now()
    started = []
    for policy in Policy.objects.filter(enabled=True, repository__isnull=False).order_by("priority", "name"):
        machines = (
            Machine.objects.present()
            .filter(assignment__policy=policy, template=False)
            .select_related("assignment")
            .annotate(last_queued=Max("runs__queued_at"))
            .order_by("last_queued")
        )
        machine_list = list(machines)
        # Every machine's latest run in one query (not one per machine).
        latest = (
            {
                run.machine_id: run
                for run in BackupRun.objects.filter(machine__in=[m.pk for m in machine_list])
                .order_by("machine_id", "-queued_at", "-pk")
                .distinct("machine_id")
            }
            if connection.features.can_distinct_on_fields
            else None
        )
        for machine in machine_list:
            last = (
                latest.get(machine.pk) if latest is not None else machine.runs.order_by("-queued_at").first()
            )
            trigger, due = RunTrigger.SCHEDULE, last is None
            if last is None and policy.schedule_cron:
                # A newly assigned machine waits for its policy's next fire time ("back up now" does not wait).
                due = _cron_due(policy, machine.assignment.assigned_at, now)
            if last is not None:
                if policy.schedule_cron:
                    interval_passed = _cron_due(policy, last.queued_at, now)
                else:
                    interval_passed = now - last.queued_at >= datetime.timedelta(
                        minutes=policy.interval_minutes
                    )
                if last.state == RunState.FAILED and last.attempt < RETRY_ATTEMPTS and last.finished_at:
                    due = interval_passed or now - last.finished_at >= retry_delay(last.attempt)
                    trigger = RunTrigger.SCHEDULE if interval_passed else RunTrigger.RETRY
                else:
                    due = interval_passed
            if not due or not policy.in_window(now):
                continue
            try:
                run = start_backup(machine=machine, requested_by=None, trigger=trigger, policy=policy)
            except BackupRefused as error:
                logger.warning("not backing up %s: %s", machine.name, error)
                continue
            if trigger == RunTrigger.RETRY and last is not None and run.attempt == 1:
                BackupRun.objects.filter(pk=run.pk).update(attempt=last.attempt + 1)
            started.append(run)
    return started


def check_rpo(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """One alert listing every protected machine whose newest recovery point is older than its policy's RPO."""
    from protection import services

    now = now or timezone.now()
    causes: dict[Machine, str] = {}
    machines = Machine.objects.present().filter(assignment__isnull=False).select_related("assignment__policy")
    for machine in machines.annotate(newest=Max("recovery_points__taken_at")):
        policy = machine.assignment.policy
        rpo = datetime.timedelta(minutes=policy.rpo_minutes)
        reference = machine.newest or machine.assignment.assigned_at
        if now - reference > rpo:
            age = (
                "never backed up"
                if machine.newest is None
                else f"last recovery point {machine.newest:%Y-%m-%d %H:%M} UTC"
            )
            causes[machine] = f"misses the RPO of {policy.rpo_minutes} min of {policy.name} ({age})"
    sync = services.sync_alert_group(
        kind=AlertKind.RPO_MISSED,
        key="rpo",
        title="Machines that miss their RPO",
        causes=causes,
        severity=Severity.CRITICAL,
    )
    return {"raised": len(sync.added), "resolved": sync.removed, "missed": len(causes)}


def check_repositories(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Record whether each repository answers (machines whose policy writes to one that does not are at risk)."""
    now = now or timezone.now()
    unreachable = 0
    for repository in Repository.objects.all():
        problem = repositories.check_reachable(repository)
        unreachable += bool(problem)
        Repository.objects.filter(pk=repository.pk).update(checked_at=now, problem=problem)
    return {"unreachable": unreachable}


def check_proxies(*, now: datetime.datetime | None = None) -> int:
    """An alert for every enabled proxy that stopped heartbeating; resolved when it is back."""
    from protection import services
    from protection.dispatch import PROXY_ONLINE_SECONDS
    from protection.models import Proxy

    now = now or timezone.now()
    raised = 0
    for proxy in Proxy.objects.filter(enabled=True):
        key = f"proxy:{proxy.pk}"
        if proxy.last_seen is None or now - proxy.last_seen > datetime.timedelta(
            seconds=PROXY_ONLINE_SECONDS
        ):
            seen = f"{proxy.last_seen:%Y-%m-%d %H:%M} UTC" if proxy.last_seen else "never"
            if services.raise_alert(
                kind=AlertKind.PROXY_OFFLINE,
                key=key,
                message=f"Proxy {proxy.name} is offline (last heartbeat {seen}); its runs wait for another proxy",
                severity=Severity.CRITICAL,
            ):
                raised += 1
        else:
            services.resolve_alerts(key=key)
    return raised
