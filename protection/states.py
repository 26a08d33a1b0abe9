"""Protection states, defined once: what "protected" means, for the dashboard, lists, the machine page, the API,
reports and alerts alike.

- protected: a committed recovery point within the policy's RPO, and nothing stops the next run;
- at risk: assigned, but the RPO is missed, the last run failed, or the policy cannot run (no repository,
  disabled, a repository that does not answer);
- waiting for first backup: assigned, no point yet and nothing failed; the first run is scheduled (its time);
- unprotected: no policy;
- excluded: a rule excludes it on purpose (or it is a template).

A machine is never "protected" the moment it has a policy: only a point that can be restored makes it so.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Max, Min, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from inventory.models import Machine
from protection.choices import ProtectionState, RunState
from protection.models import Assignment, BackupRun, Policy, ProtectionRule
from protection.rules import evaluate


@dataclass(frozen=True)
class StateInfo:
    state: ProtectionState
    reason: str  # in words: "last point 3 h ago, within the RPO of 24 h", "the policy has no repository"
    policy: Policy | None = None
    last_point_at: datetime.datetime | None = None
    next_run_at: datetime.datetime | None = None

    @property
    def label(self) -> str:
        return str(self.state.label)


def _hours(minutes: float) -> str:
    if minutes < 90:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.0f} h"
    return f"{minutes / 1440:.0f} days"


def next_run_at(
    policy: Policy, *, since: datetime.datetime, now: datetime.datetime
) -> datetime.datetime | None:
    """When the policy's schedule next starts a run for a machine last queued (or assigned) at `since`, inside
    its backup window. None when the policy cannot run."""
    if not policy.enabled or policy.repository_id is None:
        return None
    if policy.schedule_cron:
        from protection.cron import parse_cron

        schedule = parse_cron(policy.schedule_cron)
        local_now = timezone.localtime(now)
        schedule.nowfun = lambda: local_now
        due, seconds = schedule.is_due(timezone.localtime(since))
        moment = now if due else now + datetime.timedelta(seconds=seconds)
    else:
        moment = max(now, since + datetime.timedelta(minutes=policy.interval_minutes))
    return _inside_window(policy, moment)


@dataclass(frozen=True)
class Upcoming:
    """A policy's next scheduled run: when, and how many machines (of those the reader may see) it backs up."""

    policy: Policy
    at: datetime.datetime | None  # None: it cannot run (disabled, no repository) or has no machine
    machines: int


def upcoming_runs(
    policies: Iterable[Policy], machines: Iterable[Machine] | Any, *, now: datetime.datetime | None = None
) -> dict[int, Upcoming]:
    """For each policy, when its schedule next starts a run for one of `machines` (a queryset, already scoped to
    the reader): the machine waiting longest goes first, so the policy's next run is that machine's."""
    now = now or timezone.now()
    policies = list(policies)
    latest = (
        BackupRun.objects.filter(machine=OuterRef("machine"))
        .order_by("-queued_at", "-pk")
        .values("queued_at")[:1]
    )
    rows = (
        Assignment.objects.filter(
            policy__in=policies,
            machine__in=machines,
            machine__gone_since__isnull=True,
            machine__template=False,
        )
        .annotate(since=Coalesce(Subquery(latest), "assigned_at"))
        .values("policy")
        .annotate(oldest=Min("since"), machines=Count("pk"))
    )
    found = {row["policy"]: (row["oldest"], row["machines"]) for row in rows}
    result = {}
    for policy in policies:
        oldest, count = found.get(policy.pk, (None, 0))
        at = next_run_at(policy, since=oldest, now=now) if oldest is not None else None
        result[policy.pk] = Upcoming(policy, at, count)
    return result


def _inside_window(policy: Policy, moment: datetime.datetime) -> datetime.datetime:
    """The first moment at or after `moment` when the policy's window is open (minute steps, a day at most)."""
    if policy.window_start is None or policy.window_end is None or policy.in_window(moment):
        return moment
    local = timezone.localtime(moment)
    start = local.replace(
        hour=policy.window_start.hour, minute=policy.window_start.minute, second=0, microsecond=0
    )
    if start <= local:
        start += datetime.timedelta(days=1)
    return start


def states_for(machines: Iterable[Machine], *, now: datetime.datetime | None = None) -> dict[int, StateInfo]:
    """The state of each machine, in a fixed number of queries however many machines."""
    now = now or timezone.now()
    machines = list(machines)
    ids = [machine.pk for machine in machines]
    assignments = {
        a.machine_id: a
        for a in Assignment.objects.filter(machine_id__in=ids).select_related("policy__repository")
    }
    newest = dict(
        Machine.objects.filter(pk__in=ids)
        .annotate(newest=Max("recovery_points__taken_at"))
        .values_list("pk", "newest")
    )
    latest = BackupRun.objects.filter(machine=OuterRef("pk")).order_by("-queued_at", "-pk").values("pk")[:1]
    run_of = dict(
        Machine.objects.filter(pk__in=ids).annotate(last_run=Subquery(latest)).values_list("pk", "last_run")
    )
    runs = BackupRun.objects.in_bulk([pk for pk in run_of.values() if pk is not None])
    last_runs = {machine_id: runs[pk] for machine_id, pk in run_of.items() if pk is not None}
    rules = list(ProtectionRule.objects.select_related("policy", "match_source"))
    return {
        machine.pk: _state(
            machine,
            assignments.get(machine.pk),
            newest.get(machine.pk),
            last_runs.get(machine.pk),
            rules,
            now,
        )
        for machine in machines
    }


def state_of(machine: Machine, *, now: datetime.datetime | None = None) -> StateInfo:
    return states_for([machine], now=now)[machine.pk]


def _state(
    machine: Machine,
    assignment: Assignment | None,
    newest: datetime.datetime | None,
    last_run: BackupRun | None,
    rules: list[ProtectionRule],
    now: datetime.datetime,
) -> StateInfo:
    if assignment is None:
        if machine.template:
            return StateInfo(ProtectionState.EXCLUDED, "a template: templates are not backed up")
        decision = evaluate(machine, rules)
        if decision.excluded_by is not None:
            return StateInfo(ProtectionState.EXCLUDED, f"excluded by rule {decision.excluded_by.name}")
        return StateInfo(ProtectionState.UNPROTECTED, "no protection policy")
    policy = assignment.policy
    since = last_run.queued_at if last_run is not None else assignment.assigned_at
    upcoming = next_run_at(policy, since=since, now=now)
    info = {"policy": policy, "last_point_at": newest, "next_run_at": upcoming}
    if policy.repository_id is None:
        return StateInfo(
            ProtectionState.AT_RISK, f"policy {policy.name} has no repository: it cannot run", **info
        )
    if not policy.enabled:
        return StateInfo(ProtectionState.AT_RISK, f"policy {policy.name} is disabled", **info)
    if policy.repository is not None and policy.repository.problem:
        return StateInfo(
            ProtectionState.AT_RISK,
            f"repository {policy.repository.name} cannot be reached: {policy.repository.problem}",
            **info,
        )
    failed = last_run is not None and last_run.state == RunState.FAILED
    rpo = datetime.timedelta(minutes=policy.rpo_minutes)
    if newest is None:
        if failed:
            return StateInfo(ProtectionState.AT_RISK, "the first backup failed", **info)
        if now - assignment.assigned_at > rpo:
            return StateInfo(
                ProtectionState.AT_RISK,
                f"never backed up, assigned more than {_hours(policy.rpo_minutes)} ago",
                **info,
            )
        return StateInfo(ProtectionState.WAITING, "no recovery point yet", **info)
    age = now - newest
    if age > rpo:
        return StateInfo(
            ProtectionState.AT_RISK,
            f"last point {_hours(age.total_seconds() / 60)} ago misses the RPO of {_hours(policy.rpo_minutes)}",
            **info,
        )
    if failed:
        return StateInfo(ProtectionState.AT_RISK, "the last run failed", **info)
    return StateInfo(
        ProtectionState.PROTECTED,
        f"last point {_hours(age.total_seconds() / 60)} ago, within the RPO of {_hours(policy.rpo_minutes)}",
        **info,
    )


def count_states(states: dict[int, StateInfo]) -> dict[str, int]:
    counts = {state.value: 0 for state in ProtectionState}
    for info in states.values():
        counts[info.state.value] += 1
    return counts
