"""Agents on physical hosts: one-time enrolment tokens, enrolment, heartbeats with host facts, offline detection.

Keys and tokens are random, shown once, and stored as SHA-256 digests. An agent authenticates with
`Authorization: Agent bwa_<prefix>_<secret>`; its key only reaches the agent endpoints.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from core import audit
from core.events import publish_machine_event
from core.models import User
from inventory.choices import ChangeKind, MachineKind, Platform
from inventory.models import Agent, Disk, EnrolmentToken, Machine, MachineChange, MachineGroup

TOKEN_PREFIX = "bwe"  # noqa: S105  (a prefix, not a secret)
AGENT_KEY_PREFIX = "bwa"
# An agent is offline when no heartbeat came for this many of its intervals.
MISSED_HEARTBEATS = 3


class EnrolmentRefused(Exception):
    """The token is unknown, used, revoked or expired (the agent is told which, never more)."""


class EnrolmentConflict(Exception):
    """The token is valid but may not take over the host it names (another scope's, or not the one it was for)."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _split(key: str, prefix: str) -> str | None:
    parts = key.split("_", 2)
    return parts[1] if len(parts) == 3 and parts[0] == prefix else None


@transaction.atomic
def create_enrolment_token(
    *,
    actor: User,
    label: str,
    hours: int = 24,
    groups: Iterable[MachineGroup] = (),
    machine: Machine | None = None,
) -> tuple[EnrolmentToken, str]:
    """Issue a one-time enrolment token; the returned value is the only time it exists in clear.

    With `machine`, the token re-enrols that existing agent host (replacing its key) and nothing else.
    """
    if machine is not None and machine.platform != Platform.AGENT:
        raise ValueError(f"{machine.name} is not an agent host; only agent hosts are re-enrolled")
    prefix = secrets.token_hex(4)
    value = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(24)}"
    token = EnrolmentToken.objects.create(
        label=label,
        prefix=prefix,
        digest=_digest(value),
        created_by=actor,
        machine=machine,
        expires_at=timezone.now() + datetime.timedelta(hours=hours),
    )
    token.groups.set(list(groups))
    after: dict[str, Any] = {
        "label": label,
        "hours": hours,
        "groups": sorted(g.name for g in token.groups.all()),
    }
    if machine is not None:
        after["re-enrols"] = machine.name
    audit.record("enrolment_token.create", actor=actor, target=token, after=after)
    return token, value


@transaction.atomic
def revoke_enrolment_token(*, actor: User, token: EnrolmentToken) -> EnrolmentToken:
    if token.revoked_at is None and token.used_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record("enrolment_token.revoke", actor=actor, target=token)
    return token


def _facts_values(facts: dict[str, Any]) -> dict[str, Any]:
    os_name = str(facts.get("os") or "")
    return {
        "name": str(facts.get("hostname") or "")[:255] or "unnamed host",
        "hostname": str(facts.get("fqdn") or facts.get("hostname") or "")[:255],
        "guest_os": os_name[:255],
        "ip_addresses": [str(a) for a in facts.get("ip_addresses") or []][:64],
        "power_state": "poweredOn",
        "facts": {
            key: facts[key]
            for key in (
                "os",
                "kernel",
                "architecture",
                "cpus",
                "memory_bytes",
                "boot_time",
                "volumes",
                "agent_version",
            )
            if key in facts
        },
    }


def _sync_volumes(machine: Machine, facts: dict[str, Any]) -> None:
    """Block devices reported by the agent become the machine's disks (key = device path)."""
    disks = {str(d.get("device")): d for d in facts.get("disks") or [] if d.get("device")}
    existing = {d.key: d for d in machine.disks.all()}
    for key, item in disks.items():
        values = {
            "label": str(item.get("model") or key)[:255],
            "capacity_bytes": int(item.get("size_bytes") or 0),
            "path": key[:1000],
        }
        disk = existing.get(key[:100])
        if disk is None:
            Disk.objects.create(machine=machine, key=key[:100], **values)
        elif any(getattr(disk, k) != v for k, v in values.items()):
            Disk.objects.filter(pk=disk.pk).update(**values)
    stale = [d.pk for k, d in existing.items() if k not in {key[:100] for key in disks}]
    if stale:
        Disk.objects.filter(pk__in=stale).delete()


def _takeover_refusal(token: EnrolmentToken, machine: Machine | None) -> str | None:
    """Why this token may not enrol this host, or None.

    A token creates a new machine, or re-enrols an existing one that lies wholly inside the token's own groups (so
    it reaches nothing its issuer did not grant); any other existing host needs a token an admin issued for it.
    """
    if token.machine_id is not None:
        if machine is None or machine.pk != token.machine_id:
            return "this enrolment token re-enrols one particular host, and this is not that host"
        return None
    if machine is None:
        return None
    token_groups = {g.pk for g in token.groups.all()}
    machine_groups = {g.pk for g in machine.groups.all()}
    if machine_groups and machine_groups <= token_groups:
        return None
    return (
        "a host with this machine id is already enrolled outside this token's groups; "
        "an admin re-enrols it with a token issued for that host (Agents → Re-enrol)"
    )


def enrol(*, token_value: str, facts: dict[str, Any], address: str | None) -> tuple[Agent, str]:
    """Trade a one-time token for an agent key; the host becomes (or stays, by machine id) a machine.

    Raises EnrolmentRefused for a token that is not usable and EnrolmentConflict (audited, token left unused) when
    the machine id names an existing host the token may not take over.
    """
    machine_id = str(facts.get("machine_id") or "").strip().lower()
    if not machine_id or len(machine_id) > 128:
        raise ValueError("facts.machine_id is required (the host's stable machine id)")
    prefix = _split(token_value, TOKEN_PREFIX)
    try:
        return _enrol(
            prefix=prefix, token_value=token_value, machine_id=machine_id, facts=facts, address=address
        )
    except EnrolmentConflict as conflict:
        token = EnrolmentToken.objects.filter(prefix=prefix or "").first()
        audit.record(
            "agent.enrol_refused",
            target=token,
            after={
                "machine_id": machine_id,
                "hostname": str(facts.get("hostname") or "")[:255],
                "reason": str(conflict),
            },
            ip_address=address,
        )
        raise


def _enrol(
    *, prefix: str | None, token_value: str, machine_id: str, facts: dict[str, Any], address: str | None
) -> tuple[Agent, str]:
    now = timezone.now()
    with transaction.atomic():
        token = EnrolmentToken.objects.select_for_update().filter(prefix=prefix or "").first()
        if token is None or not secrets.compare_digest(token.digest, _digest(token_value)):
            raise EnrolmentRefused("unknown enrolment token")
        if token.used_at is not None:
            raise EnrolmentRefused("this enrolment token was used already")
        if token.revoked_at is not None:
            raise EnrolmentRefused("this enrolment token was revoked")
        if token.expires_at <= now:
            raise EnrolmentRefused("this enrolment token has expired")
        identity = f"agent:{machine_id}"
        existing = Machine.objects.select_for_update().filter(identity=identity).first()
        refusal = _takeover_refusal(token, existing)
        if refusal is not None:
            raise EnrolmentConflict(refusal)
        token.used_at = now
        token.save(update_fields=["used_at"])
        values = _facts_values(facts)
        machine, created = Machine.objects.get_or_create(
            identity=identity,
            defaults={"kind": MachineKind.PHYSICAL, "platform": Platform.AGENT, "first_seen": now, **values},
        )
        if not created:
            for key, value in values.items():
                setattr(machine, key, value)
            machine.gone_since = None
            machine.last_seen = now
            machine.save()
        machine.groups.add(*token.groups.all())
        _sync_volumes(machine, facts)
        key_prefix = secrets.token_hex(4)
        key = f"{AGENT_KEY_PREFIX}_{key_prefix}_{secrets.token_urlsafe(32)}"
        Agent.objects.filter(machine=machine).delete()  # re-enrolment replaces the old key
        agent = Agent.objects.create(
            machine=machine,
            key_prefix=key_prefix,
            key_digest=_digest(key),
            version=str(facts.get("agent_version") or "")[:32],
            enrolled_with=token,
            heartbeat_seconds=int(facts.get("heartbeat_seconds") or 60),
            last_heartbeat_at=now,
            last_address=address,
        )
        MachineChange.objects.create(
            machine=machine,
            kind=ChangeKind.AGENT if not created else ChangeKind.DISCOVERED,
            summary=f"agent enrolled with token {token.label!r}",
        )
        audit.record(
            "agent.enrol",
            target=machine,
            after={"token": token.label, "machine_id": machine_id},
            ip_address=address,
        )
        from protection import services as protection

        protection.apply_rules([machine])
    transaction.on_commit(
        lambda: publish_machine_event("machine.discovered", machine, {"name": machine.name})
    )
    return agent, key


def authenticate(key: str) -> Agent | None:
    prefix = _split(key, AGENT_KEY_PREFIX)
    if prefix is None:
        return None
    agent = Agent.objects.select_related("machine").filter(key_prefix=prefix, revoked_at__isnull=True).first()
    if agent is None or not secrets.compare_digest(agent.key_digest, _digest(key)):
        return None
    return agent


def heartbeat(*, agent: Agent, facts: dict[str, Any], address: str | None) -> Agent:
    """Record a heartbeat and the host's current facts; an offline agent comes back online."""
    from protection import services as protection

    now = timezone.now()
    machine = agent.machine
    with transaction.atomic():
        values = _facts_values(facts) if facts else {}
        renamed = values.get("name") and values["name"] != machine.name
        if renamed:
            MachineChange.objects.create(
                machine=machine,
                kind=ChangeKind.RENAMED,
                summary=f"renamed from {machine.name} to {values['name']}",
            )
        for key, value in values.items():
            setattr(machine, key, value)
        machine.last_seen = now
        machine.gone_since = None
        machine.save()
        if facts:
            _sync_volumes(machine, facts)
        came_back = not agent.online
        agent.last_heartbeat_at = now
        agent.last_address = address
        agent.online = True
        if facts.get("agent_version"):
            agent.version = str(facts["agent_version"])[:32]
        if facts.get("heartbeat_seconds"):
            agent.heartbeat_seconds = max(5, int(facts["heartbeat_seconds"]))
        agent.save()
        if came_back:
            MachineChange.objects.create(machine=machine, kind=ChangeKind.AGENT, summary="agent back online")
            protection.resolve_alerts(key=f"agent-offline:{machine.pk}")
            transaction.on_commit(
                lambda: publish_machine_event("agent.online", machine, {"name": machine.name})
            )
        if renamed:
            protection.apply_rules([machine])
    return agent


def check_heartbeats(*, now: datetime.datetime | None = None) -> list[Agent]:
    """Agents silent for MISSED_HEARTBEATS intervals go offline, with an alert."""
    from protection import services as protection
    from protection.choices import AlertKind, Severity

    now = now or timezone.now()
    went_offline = []
    for agent in Agent.objects.filter(online=True, revoked_at__isnull=True).select_related("machine"):
        silent_since = agent.last_heartbeat_at or agent.enrolled_at
        if now - silent_since <= datetime.timedelta(seconds=agent.heartbeat_seconds * MISSED_HEARTBEATS):
            continue
        with transaction.atomic():
            if not Agent.objects.filter(pk=agent.pk, online=True).update(online=False):
                continue
            MachineChange.objects.create(
                machine=agent.machine,
                kind=ChangeKind.AGENT,
                summary=f"agent offline: no heartbeat since {silent_since:%Y-%m-%d %H:%M:%S} UTC",
            )
            protection.raise_alert(
                kind=AlertKind.AGENT_OFFLINE,
                key=f"agent-offline:{agent.machine_id}",
                message=f"The agent on {agent.machine.name} has sent no heartbeat since {silent_since:%Y-%m-%d %H:%M} UTC",
                severity=Severity.WARNING,
                machine=agent.machine,
            )
            machine = agent.machine
            transaction.on_commit(
                lambda m=machine: publish_machine_event("agent.offline", m, {"name": m.name})
            )
        went_offline.append(agent)
    return went_offline
