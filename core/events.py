"""Live events: who receives what over /ws/events/.

A socket joins groups chosen from its user's role and scope when it connects:
- admins and auditors join ALL_MACHINES and AUDIT, admins also ADMINS (sources, discovery runs);
- help-desk operators and owners join one group per machine group they belong to;
- a socket may also subscribe to one machine (authorized with visible_to at that moment).
Publishers name the machine (or the audit log) an event is about; this module picks the groups. Events are
best-effort: the database is the truth, so a channel layer that is down is logged and never fails a write.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from core.choices import GLOBAL_ROLES, Role

if TYPE_CHECKING:
    from core.models import AuditEvent, User
    from inventory.models import Machine

logger = logging.getLogger(__name__)

ALL_MACHINES = "events.machines.all"
AUDIT = "events.audit"
ADMINS = "events.admins"  # sources, discovery runs, alerts not tied to a machine
MESSAGE_TYPE = "bulwark.event"  # dispatched to EventsConsumer.bulwark_event
ACCESS_MESSAGE_TYPE = "bulwark.access"  # dispatched to EventsConsumer.bulwark_access: re-check rights now


def machine_group_channel(group_id: int) -> str:
    return f"events.machines.group.{group_id}"


def machine_channel(machine_id: int) -> str:
    return f"events.machine.{machine_id}"


def user_channel(user_id: int) -> str:
    """Every socket of a user joins this group, so a change of the user's rights reaches all of them."""
    return f"events.user.{user_id}"


def groups_for(user: User) -> list[str]:
    """The channel-layer groups a socket of this user joins on connect."""
    if not (user.is_authenticated and user.is_active):
        return []
    if user.role == Role.ADMIN:
        return [ALL_MACHINES, AUDIT, ADMINS]
    if user.role in GLOBAL_ROLES:
        return [ALL_MACHINES, AUDIT]
    return [machine_group_channel(pk) for pk in user.machine_groups.values_list("pk", flat=True)]


def publish(event_type: str, data: dict[str, Any], *, groups: Iterable[str]) -> None:
    """Send one typed event to channel-layer groups (each socket receives it once, deduplicated by id)."""
    publish_many([(event_type, data, list(groups))])


def publish_many(events: list[tuple[str, dict[str, Any], list[str]]]) -> None:
    """Send several events in one trip to the channel layer's event loop (not one thread hop per message)."""
    messages = []
    for event_type, data, groups in events:
        message = {"type": MESSAGE_TYPE, "id": uuid.uuid4().hex, "event": event_type, "data": data}
        messages += [(group, message) for group in dict.fromkeys(groups)]
    _send(messages)


def _send(messages: list[tuple[str, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    if layer is None or not messages:
        return

    async def send_all() -> None:
        for group, message in messages:
            try:
                await layer.group_send(group, message)
            except Exception:
                logger.warning(
                    "live message %s to %s not delivered",
                    message.get("event", message["type"]),
                    group,
                    exc_info=True,
                )

    try:
        async_to_sync(send_all)()
    except Exception:
        logger.warning("live messages not delivered", exc_info=True)


def publish_access_changed(
    *, users: Iterable[int] = (), machines: Iterable[int] = (), session_key: str | None = None
) -> None:
    """Tell open sockets to re-check their rights: those of these users (one signed out when session_key is
    given), and those subscribed to these machines (their groups changed). Sent once the transaction commits."""
    from django.db import transaction

    groups = [user_channel(pk) for pk in users] + [machine_channel(pk) for pk in machines]
    message: dict[str, Any] = {"type": ACCESS_MESSAGE_TYPE, "closing_session": session_key}
    if groups:
        transaction.on_commit(lambda: _send([(group, message) for group in dict.fromkeys(groups)]))


def publish_machine_event(event_type: str, machine: Machine, data: dict[str, Any]) -> None:
    groups = [ALL_MACHINES, machine_channel(machine.pk)]
    groups += [machine_group_channel(pk) for pk in machine.groups.values_list("pk", flat=True)]
    publish(event_type, {"machine": machine.pk, **data}, groups=groups)


# Above this many machines, one summary event per group replaces the per-machine events (a discovery of
# thousands of VMs must not flood every socket).
BULK_EVENTS = 50


def publish_machine_events(event_type: str, items: list[tuple[Machine, dict[str, Any]]]) -> None:
    """Many machine events (a discovery's worth) with one query for all their groups and one trip to the
    channel layer; beyond BULK_EVENTS machines, one "<event>.bulk" summary per group."""
    if not items:
        return
    from inventory.models import Machine

    through = Machine.groups.through
    groups: dict[int, list[int]] = {}
    for machine_id, group_id in through.objects.filter(machine_id__in=[m.pk for m, _ in items]).values_list(
        "machine_id", "machinegroup_id"
    ):
        groups.setdefault(machine_id, []).append(group_id)
    if len(items) <= BULK_EVENTS:
        events = []
        for machine, data in items:
            targets = [ALL_MACHINES, machine_channel(machine.pk)]
            targets += [machine_group_channel(pk) for pk in groups.get(machine.pk, [])]
            events.append((event_type, {"machine": machine.pk, **data}, targets))
        publish_many(events)
        return
    per_group: dict[str, list[int]] = {ALL_MACHINES: [m.pk for m, _ in items]}
    for machine, _ in items:
        for pk in groups.get(machine.pk, []):
            per_group.setdefault(machine_group_channel(pk), []).append(machine.pk)
    publish_many(
        [
            (f"{event_type}.bulk", {"count": len(ids), "machines": ids[:1000]}, [group])
            for group, ids in per_group.items()
        ]
    )


def publish_audit_event(event: AuditEvent) -> None:
    publish(
        "audit.recorded",
        {
            "id": event.pk,
            "at": event.at.isoformat(),
            "actor": event.actor_name,
            "action": event.action,
            "target": event.target_repr,
        },
        groups=[AUDIT],
    )
