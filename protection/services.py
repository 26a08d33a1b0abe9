"""Use cases of protection: policies, rules, assignments (by rule or by a person), and alerts."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from core import audit
from core.events import ADMINS, publish, publish_machine_event, publish_machine_events
from core.models import User
from inventory.choices import ChangeKind
from inventory.models import Machine, MachineChange
from protection.choices import AlertKind, RuleMode, Severity
from protection.models import (
    POLICY_FIELDS,
    RULE_FIELDS,
    Alert,
    AlertMachine,
    Assignment,
    CopyTarget,
    Policy,
    ProtectionRule,
    Repository,
)
from protection.rules import Decision, evaluate

logger = logging.getLogger(__name__)

POLICY_AUDIT_FIELDS = POLICY_FIELDS
RULE_AUDIT_FIELDS = RULE_FIELDS


# --- policies --------------------------------------------------------------------------------------------------
@transaction.atomic
def create_policy(
    *, actor: User | None, name: str, description: str = "", rpo_minutes: int = 1440, enabled: bool = True
) -> Policy:
    """Create a policy rules and people can assign."""
    policy = Policy.objects.create(
        name=name, description=description, rpo_minutes=rpo_minutes, enabled=enabled
    )
    audit.record(
        "policy.create", actor=actor, target=policy, after=audit.snapshot(policy, POLICY_AUDIT_FIELDS)
    )
    return policy


@transaction.atomic
def update_policy(*, actor: User | None, policy: Policy, **fields: Any) -> Policy:
    """Change a policy's name, description, RPO or enabled state."""
    before = audit.snapshot(policy, POLICY_AUDIT_FIELDS)
    for name, value in fields.items():
        if name not in POLICY_AUDIT_FIELDS:
            raise TypeError(f"unknown policy field {name}")
        setattr(policy, name, value)
    policy.save()
    audit.record(
        "policy.update",
        actor=actor,
        target=policy,
        before=before,
        after=audit.snapshot(policy, POLICY_AUDIT_FIELDS),
    )
    return policy


@transaction.atomic
def set_guest_login(*, actor: User | None, policy: Policy, username: str, password: str | None) -> Policy:
    """The guest login a vSphere policy's scripts run with; stored encrypted. A password of None keeps the one
    stored; an empty user name removes the login."""
    from core.services import create_credential, delete_credential, update_credential

    current = policy.guest_credential
    if not username:
        if current is not None:
            policy.guest_credential = None
            policy.save(update_fields=["guest_credential"])
            delete_credential(actor=actor, credential=current)
        return policy
    if current is None:
        policy.guest_credential = create_credential(
            actor=actor,
            name=f"guest login of policy {policy.name}",
            kind="guest",
            username=username,
            secret=password or "",
        )
        policy.save(update_fields=["guest_credential"])
    else:
        update_credential(actor=actor, credential=current, username=username, secret=password)
    return policy


# --- copy targets ----------------------------------------------------------------------------------------------
COPY_TARGET_FIELDS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


class CopyTargetRefused(ValueError):
    """The copy target cannot be added (the policy's own repository, one already there, a retention of nothing)."""


@transaction.atomic
def add_copy_target(*, actor: User | None, policy: Policy, repository: Repository, **keep: int) -> CopyTarget:
    """Copy every recovery point of the policy to another repository too, kept by a retention of its own."""
    if repository == policy.repository:
        raise CopyTargetRefused("a copy must go to another repository than the policy's own")
    if CopyTarget.objects.filter(policy=policy, repository=repository).exists():
        raise CopyTargetRefused(f"the policy copies to {repository.name} already")
    values = {
        name: int(keep.get(name, getattr(CopyTarget, name).field.default)) for name in COPY_TARGET_FIELDS
    }
    if not any(values.values()):
        raise CopyTargetRefused("the copy's retention must keep something")
    target = CopyTarget.objects.create(policy=policy, repository=repository, **values)
    audit.record(
        "policy.copy_target.add",
        actor=actor,
        target=policy,
        after={"repository": repository.name, "tier": repository.tier, **values},
    )
    return target


@transaction.atomic
def remove_copy_target(*, actor: User | None, target: CopyTarget) -> None:
    """Stop copying; the copies already made stay in that repository until its retention or an admin removes
    them."""
    audit.record(
        "policy.copy_target.remove",
        actor=actor,
        target=target.policy,
        before={"repository": target.repository.name},
    )
    target.delete()


# --- rules -----------------------------------------------------------------------------------------------------
def _rules() -> list[ProtectionRule]:
    return list(ProtectionRule.objects.select_related("policy", "match_source").order_by("position"))


@transaction.atomic
def create_rule(*, actor: User | None, apply: bool = True, **fields: Any) -> ProtectionRule:
    """Add a rule (at the end unless a position is given) and apply the rules to every machine."""
    if fields.get("position") is None:
        last = ProtectionRule.objects.aggregate(last=Max("position"))["last"]
        fields["position"] = (last or 0) + 10
    else:
        _make_room(fields["position"])
    rule = ProtectionRule.objects.create(**fields)
    audit.record("rule.create", actor=actor, target=rule, after=audit.snapshot(rule, RULE_AUDIT_FIELDS))
    if apply:
        apply_rules(Machine.objects.present(), actor=actor)
    return rule


def _make_room(position: int, *, exclude: int | None = None) -> None:
    """Shift rules at or after `position` down by one step, so the new position is free."""
    taken = ProtectionRule.objects.filter(position=position).exclude(pk=exclude).exists()
    if not taken:
        return
    for rule in (
        ProtectionRule.objects.filter(position__gte=position).exclude(pk=exclude).order_by("-position")
    ):
        rule.position += 1
        rule.save(update_fields=["position"])


@transaction.atomic
def update_rule(
    *, actor: User | None, rule: ProtectionRule, apply: bool = True, **fields: Any
) -> ProtectionRule:
    """Change a rule; the rules are applied again to every machine."""
    before = audit.snapshot(rule, RULE_AUDIT_FIELDS)
    if "position" in fields and fields["position"] != rule.position:
        _make_room(fields["position"], exclude=rule.pk)
    for name, value in fields.items():
        setattr(rule, name, value)
    rule.save()
    audit.record(
        "rule.update", actor=actor, target=rule, before=before, after=audit.snapshot(rule, RULE_AUDIT_FIELDS)
    )
    if apply:
        apply_rules(Machine.objects.present(), actor=actor)
    return rule


@transaction.atomic
def move_rule(*, actor: User | None, rule: ProtectionRule, direction: int) -> ProtectionRule:
    """Swap a rule with its neighbour above (-1) or below (+1)."""
    rules = _rules()
    index = next(i for i, r in enumerate(rules) if r.pk == rule.pk)
    other_index = index + (1 if direction > 0 else -1)
    if not 0 <= other_index < len(rules):
        return rule
    other = rules[other_index]
    mine, theirs = rule.position, other.position
    # Through a free position, so the unique constraint holds at every step.
    ProtectionRule.objects.filter(pk=rule.pk).update(position=max(mine, theirs) + 100000)
    ProtectionRule.objects.filter(pk=other.pk).update(position=mine)
    ProtectionRule.objects.filter(pk=rule.pk).update(position=theirs)
    rule.refresh_from_db()
    audit.record("rule.move", actor=actor, target=rule, before={"position": mine}, after={"position": theirs})
    apply_rules(Machine.objects.present(), actor=actor)
    return rule


@transaction.atomic
def delete_rule(*, actor: User | None, rule: ProtectionRule) -> None:
    """Delete a rule. Its assignments stay (their reason keeps the rule's name); rules are applied again."""
    audit.record("rule.delete", actor=actor, target=rule, before=audit.snapshot(rule, RULE_AUDIT_FIELDS))
    rule.delete()
    apply_rules(Machine.objects.present(), actor=actor)


def dry_run(rule: ProtectionRule, machines: Iterable[Machine]) -> list[tuple[Machine, Decision]]:
    """Machines this rule (as given, saved or not) would match, with what all rules would then decide."""
    others = [r for r in _rules() if r.pk != rule.pk]
    rules = [*others, rule]
    matched = []
    for machine in machines:
        decision = evaluate(machine, rules)
        if any(result.rule is rule and result.matched for result in decision.trace):
            matched.append((machine, decision))
    return matched


# --- assignments -----------------------------------------------------------------------------------------------
def _history(machine: Machine, summary: str, **detail: Any) -> None:
    MachineChange.objects.create(
        machine=machine, kind=ChangeKind.PROTECTION, summary=summary[:500], detail=detail
    )


@transaction.atomic
def assign_policy(
    *, actor: User, machine: Machine, policy: Policy | None, reason: str = ""
) -> Assignment | None:
    """A person puts a machine under a policy (rules no longer change it), or takes it off (policy None:
    the rules decide again)."""
    current = Assignment.objects.filter(machine=machine).select_related("policy").first()
    before = {
        "policy": current.policy.name if current else None,
        "by": "rule" if current and current.rule_id else "person",
    }
    if policy is None:
        if current is not None:
            current.delete()
            _history(machine, f"{actor} removed policy {current.policy}", by=actor.get_username())
        audit.record("assignment.clear", actor=actor, target=machine, before=before, after={"policy": None})
        apply_rules([machine], actor=actor)
        return Assignment.objects.filter(machine=machine).first()
    why = reason or f"assigned by {actor.get_username()}"
    assignment, _ = Assignment.objects.update_or_create(
        machine=machine,
        defaults={
            "policy": policy,
            "rule": None,
            "assigned_by": actor,
            "reason": why,
            "assigned_at": timezone.now(),
        },
    )
    _history(machine, f"{actor} assigned policy {policy}", by=actor.get_username(), policy=policy.name)
    audit.record("assignment.set", actor=actor, target=machine, before=before, after={"policy": policy.name})
    leave_alert_group(key=UNPROTECTED_KEY, machine_ids=[machine.pk])
    transaction.on_commit(
        lambda: publish_machine_event("machine.protection", machine, {"policy": policy.name})
    )
    return assignment


def apply_rules(machines: Iterable[Machine], *, actor: User | None = None) -> dict[str, int]:
    """Bring rule-made assignments in line with the rules. Returns counts of assigned / changed / removed.

    A person's assignment is never touched. An assign-only rule never takes a policy away; an
    assign-and-remove rule's assignment follows it (moves to another rule's policy, or goes). A fixed number
    of queries however many machines change (a discovery applies rules to thousands at once)."""
    rules = _rules()
    machine_list = [m for m in machines if not m.template]
    current = {
        a.machine_id: a
        for a in Assignment.objects.filter(machine__in=[m.pk for m in machine_list]).select_related(
            "policy", "rule"
        )
    }
    now = timezone.now()
    plan = _Plan()
    for machine in machine_list:
        _reconcile(machine, current.get(machine.pk), evaluate(machine, rules), now, plan)
    with transaction.atomic():
        Assignment.objects.bulk_create(plan.creates, batch_size=500)
        if plan.updates:
            Assignment.objects.bulk_update(
                plan.updates, ["policy", "rule", "reason", "assigned_at"], batch_size=500
            )
        if plan.deletes:
            Assignment.objects.filter(pk__in=plan.deletes).delete()
        MachineChange.objects.bulk_create(plan.history, batch_size=500)
        if plan.resolved:
            leave_alert_group(key=UNPROTECTED_KEY, machine_ids=plan.resolved)
        announced = list(plan.announce)
        transaction.on_commit(lambda: publish_machine_events("machine.protection", announced))
    return {"assigned": len(plan.creates), "changed": len(plan.updates), "removed": len(plan.deletes)}


@dataclass
class _Plan:
    creates: list[Assignment] = field(default_factory=list)
    updates: list[Assignment] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    history: list[MachineChange] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)  # machines no longer unprotected
    announce: list[tuple[Machine, dict[str, Any]]] = field(default_factory=list)

    def note(self, machine: Machine, summary: str, policy: str | None, **detail: Any) -> None:
        self.history.append(
            MachineChange(
                machine=machine,
                kind=ChangeKind.PROTECTION,
                summary=summary[:500],
                detail={"policy": policy, **detail},
            )
        )
        self.announce.append((machine, {"policy": policy}))


def _reconcile(
    machine: Machine, existing: Assignment | None, decision: Decision, now: datetime.datetime, plan: _Plan
) -> None:
    if existing is not None and existing.rule_id is None:
        return  # a person decided
    wanted = decision.policy
    if existing is None:
        if wanted is None or decision.rule is None or not wanted.enabled:
            return
        plan.creates.append(
            Assignment(
                machine=machine, policy=wanted, rule=decision.rule, reason=decision.summary, assigned_at=now
            )
        )
        plan.resolved.append(machine.pk)
        plan.note(machine, decision.summary, wanted.name, rule=decision.rule.name)
        return
    if decision.excluded_by is not None:
        # Exclusions win, whatever the mode of the rule that assigned it: the trace, the preview and the
        # assignment always agree.
        plan.deletes.append(existing.pk)
        plan.note(
            machine,
            f"policy {existing.policy} removed: {decision.summary}",
            None,
            rule=decision.excluded_by.name,
        )
        return
    follows_rule = existing.rule is not None and existing.rule.mode == RuleMode.ASSIGN_AND_REMOVE
    if not follows_rule:
        return  # assign-only: keeps its policy
    if wanted is None or decision.rule is None:
        plan.deletes.append(existing.pk)
        rule_name = existing.rule.name if existing.rule else ""
        plan.note(machine, f"policy {existing.policy} removed: {decision.summary}", None, rule=rule_name)
        return
    if existing.policy_id != wanted.pk or existing.rule_id != decision.rule.pk:
        old = existing.policy.name
        existing.policy, existing.rule, existing.reason, existing.assigned_at = (
            wanted,
            decision.rule,
            decision.summary,
            now,
        )
        plan.updates.append(existing)
        plan.note(
            machine, f"policy {old} → {wanted}: {decision.summary}", wanted.name, rule=decision.rule.name
        )


# --- alerts ----------------------------------------------------------------------------------------------------
def raise_alert(
    *,
    kind: AlertKind,
    key: str,
    message: str,
    severity: Severity = Severity.WARNING,
    machine: Machine | None = None,
    source: Any = None,
) -> Alert | None:
    """Open an alert unless one is open for the same key already. Returns the new alert, or None.

    An open alert for the key takes the new message and severity: its text follows the latest cause."""
    if (
        Alert.objects.open()
        .filter(key=key)
        .exclude(message=message[:1000], severity=severity)
        .update(message=message[:1000], severity=severity, updated_at=timezone.now())
        or Alert.objects.open().filter(key=key).exists()
    ):
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                kind=kind, key=key, message=message[:1000], severity=severity, machine=machine, source=source
            )
    except IntegrityError:  # raised concurrently by another worker: one is enough
        return None
    if severity == Severity.CRITICAL:
        transaction.on_commit(lambda: _mail_admins(alert))
    data = {"id": alert.pk, "kind": alert.kind, "severity": alert.severity, "message": alert.message}
    if machine is not None:
        transaction.on_commit(lambda: publish_machine_event("alert.raised", machine, data))
    else:
        transaction.on_commit(lambda: publish("alert.raised", data, groups=[ADMINS]))
    return alert


def _mail_admins(alert: Alert, *, body: str = "") -> None:
    """Critical alerts also go by e-mail to every active backup admin with an address (Django's mail backend)."""
    from django.core.mail import send_mail

    from core.choices import Role

    recipients = list(
        User.objects.filter(role=Role.ADMIN, is_active=True).exclude(email="").values_list("email", flat=True)
    )
    if not recipients:
        return
    try:
        send_mail(
            subject=f"[Bulwark] {alert.get_kind_display()}: {alert.message[:120]}",
            message=f"{body or alert.message}\n\nRaised {alert.raised_at:%Y-%m-%d %H:%M} UTC. Open alerts: /alerts/",
            from_email=None,
            recipient_list=recipients,
        )
    except Exception:
        logger.warning("alert %s not mailed", alert.pk, exc_info=True)


# A digest lists at most this many machines by name; the alert page lists them all.
DIGEST_NAMES = 50


@dataclass
class GroupSync:
    alert: Alert | None
    added: list[Machine]
    removed: int


def sync_alert_group(
    *,
    kind: AlertKind,
    key: str,
    title: str,
    causes: dict[Machine, str],
    severity: Severity = Severity.WARNING,
) -> GroupSync:
    """One alert of one kind from one check, listing its machines and each one's current cause.

    Machines that joined are added (one e-mail digest per check for those, when critical), those whose condition
    is over leave the list, causes follow the latest state, and the alert resolves when the list is empty."""
    now = timezone.now()
    alert = Alert.objects.open().filter(key=key).first()
    if not causes:
        if alert is not None:
            Alert.objects.filter(pk=alert.pk).update(resolved_at=now, updated_at=now)
        return GroupSync(None, [], alert.entries.count() if alert is not None else 0)
    if alert is None:
        try:
            with transaction.atomic():
                alert = Alert.objects.create(kind=kind, key=key, message=title[:1000], severity=severity)
        except IntegrityError:  # another worker's check raised it a moment ago
            alert = Alert.objects.open().get(key=key)
    elif alert.message != title[:1000] or alert.severity != severity:
        Alert.objects.filter(pk=alert.pk).update(message=title[:1000], severity=severity, updated_at=now)
    entries = {entry.machine_id: entry for entry in AlertMachine.objects.filter(alert=alert)}
    wanted = {machine.pk: (machine, cause[:500]) for machine, cause in causes.items()}
    added = [machine for pk, (machine, _) in wanted.items() if pk not in entries]
    AlertMachine.objects.bulk_create(
        [
            AlertMachine(alert=alert, machine=machine, cause=wanted[machine.pk][1], since=now)
            for machine in added
        ],
        batch_size=500,
    )
    changed = []
    for pk, entry in entries.items():
        if pk in wanted and entry.cause != wanted[pk][1]:
            entry.cause = wanted[pk][1]
            changed.append(entry)
    AlertMachine.objects.bulk_update(changed, ["cause"], batch_size=500)
    gone = [pk for pk in entries if pk not in wanted]
    removed = AlertMachine.objects.filter(alert=alert, machine_id__in=gone).delete()[0] if gone else 0
    if added or changed or removed:
        Alert.objects.filter(pk=alert.pk).update(updated_at=now)
    if added:
        if severity == Severity.CRITICAL:
            lines = [f"- {machine.name}: {wanted[machine.pk][1]}" for machine in added[:DIGEST_NAMES]]
            if len(added) > DIGEST_NAMES:
                lines.append(f"… and {len(added) - DIGEST_NAMES} more")
            body = f"{title}: {len(added)} more machine(s), {len(wanted)} in all.\n\n" + "\n".join(lines)
            transaction.on_commit(lambda: _mail_admins(alert, body=body))
        data = {"id": alert.pk, "kind": alert.kind, "severity": severity, "message": title}
        items = [(machine, data) for machine in added]
        transaction.on_commit(lambda: publish_machine_events("alert.raised", items))
    return GroupSync(alert, added, removed)


def leave_alert_group(*, key: str, machine_ids: list[int]) -> None:
    """These machines' condition is over: they leave the open grouped alert, which resolves once empty."""
    alert = Alert.objects.open().filter(key=key).first()
    if alert is None:
        return
    for start in range(0, len(machine_ids), 900):
        AlertMachine.objects.filter(alert=alert, machine_id__in=machine_ids[start : start + 900]).delete()
    now = timezone.now()
    if not AlertMachine.objects.filter(alert=alert).exists():
        Alert.objects.filter(pk=alert.pk).update(resolved_at=now, updated_at=now)


@transaction.atomic
def acknowledge_alert(*, actor: User, alert: Alert) -> Alert:
    """Someone has seen it and is on it; the alert stays open until its condition is over."""
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = timezone.now(), actor
        alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
        audit.record("alert.acknowledge", actor=actor, target=alert, after={"message": alert.message})
    return alert


def _resolve(key: str) -> int:
    return Alert.objects.open().filter(key=key).update(resolved_at=timezone.now())


def resolve_alerts(*, key: str) -> int:
    """Close the open alert for a key (the condition is over)."""
    return _resolve(key)


def unprotected_grace() -> datetime.timedelta:
    return datetime.timedelta(minutes=settings.BULWARK_UNPROTECTED_GRACE_MINUTES)


def unprotected_machines(queryset: Any = None) -> Any:
    """Present machines (not templates) without a policy that no exclusion rule covers."""
    queryset = Machine.objects.all() if queryset is None else queryset
    return queryset.present().filter(template=False, assignment__isnull=True)


def check_unprotected(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """One alert listing every machine still without a policy after the grace period (each with why); machines
    that got one, are gone or were excluded on purpose leave it."""
    from protection.states import ProtectionState, states_for

    now = now or timezone.now()

    def still_waiting() -> list[Machine]:
        return list(
            unprotected_machines().filter(first_seen__lte=now - unprotected_grace()).select_related("source")
        )

    # A machine that a rule matches but that never got its policy (the process died between the inventory
    # write and the rules, an event was lost) gets it now, before anyone is alerted about it.
    waiting = still_waiting()
    caught_up = apply_rules(waiting)["assigned"]
    if caught_up:
        waiting = still_waiting()
    rules = _rules()
    states = states_for(waiting, now=now)  # the one definition: excluded machines are not alerted
    causes: dict[Machine, str] = {}
    for machine in waiting:
        if states[machine.pk].state != ProtectionState.UNPROTECTED:
            continue
        age = now - machine.first_seen
        causes[machine] = f"no policy {_minutes(age)} after discovery ({evaluate(machine, rules).summary})"
    sync = sync_alert_group(
        kind=AlertKind.UNPROTECTED,
        key=UNPROTECTED_KEY,
        title="Machines without a protection policy",
        causes=causes,
        severity=Severity.CRITICAL,
    )
    return {
        "raised": len(sync.added),
        "resolved": sync.removed,
        "unprotected": len(causes),
        "caught_up": caught_up,
    }


UNPROTECTED_KEY = "unprotected"


def _minutes(age: datetime.timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h"
