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


def machine_group_channel(group_id: int) -> str:
    return f"events.machines.group.{group_id}"


def machine_channel(machine_id: int) -> str:
    return f"events.machine.{machine_id}"


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
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": MESSAGE_TYPE, "id": uuid.uuid4().hex, "event": event_type, "data": data}
    for group in dict.fromkeys(groups):
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            logger.warning("live event %s to %s not delivered", event_type, group, exc_info=True)


def publish_machine_event(event_type: str, machine: Machine, data: dict[str, Any]) -> None:
    groups = [ALL_MACHINES, machine_channel(machine.pk)]
    groups += [machine_group_channel(pk) for pk in machine.groups.values_list("pk", flat=True)]
    publish(event_type, {"machine": machine.pk, **data}, groups=groups)


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
