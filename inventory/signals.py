"""A change of who may see which machines re-checks the open sockets it concerns (core/consumers.py)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, pre_delete
from django.dispatch import receiver

from core import events
from inventory.models import Machine, MachineGroup


@receiver(m2m_changed, sender=MachineGroup.members.through)
def recheck_members(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if isinstance(instance, MachineGroup):
        users = (
            list(pk_set or ())
            if action != "pre_clear"
            else list(instance.members.values_list("pk", flat=True))
        )
    else:  # a user's groups changed
        users = [instance.pk]
    events.publish_access_changed(users=users)


@receiver(m2m_changed, sender=Machine.groups.through)
def recheck_machines(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if isinstance(instance, Machine):
        machines = [instance.pk]
        groups = (
            list(pk_set or ())
            if action != "pre_clear"
            else list(instance.groups.values_list("pk", flat=True))
        )
    else:  # a group's machines changed
        machines = (
            list(pk_set or ())
            if action != "pre_clear"
            else list(instance.machines.values_list("pk", flat=True))
        )
        groups = [instance.pk]
    # Members of those groups may lose (or gain) machines they watch through the group channels too.
    users = MachineGroup.members.through.objects.filter(machinegroup_id__in=groups).values_list(
        "user_id", flat=True
    )
    events.publish_access_changed(users=list(users), machines=machines)


@receiver(pre_delete, sender=MachineGroup)
def recheck_deleted_group(sender: Any, instance: MachineGroup, **kwargs: Any) -> None:
    events.publish_access_changed(
        users=list(instance.members.values_list("pk", flat=True)),
        machines=list(instance.machines.values_list("pk", flat=True)),
    )
