"""Use cases that change machine groups and machine facts set by people. Discovery writes come later."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from core import audit
from core.events import publish_machine_event
from core.models import User
from inventory.models import Machine, MachineGroup

GROUP_AUDIT_FIELDS = ("name", "description", "members", "machines")
MACHINE_AUDIT_FIELDS = ("owner", "jurisdiction", "groups")


@transaction.atomic
def create_machine_group(
    *,
    actor: User | None,
    name: str,
    description: str = "",
    members: Iterable[User] = (),
    machines: Iterable[Machine] = (),
) -> MachineGroup:
    """Create a scope: its members see its machines."""
    group = MachineGroup.objects.create(name=name, description=description)
    group.members.set(list(members))
    group.machines.set(list(machines))
    audit.record(
        "machine_group.create", actor=actor, target=group, after=audit.snapshot(group, GROUP_AUDIT_FIELDS)
    )
    return group


@transaction.atomic
def update_machine_group(
    *,
    actor: User | None,
    group: MachineGroup,
    name: str | None = None,
    description: str | None = None,
    members: Iterable[User] | None = None,
    machines: Iterable[Machine] | None = None,
) -> MachineGroup:
    """Rename a group or change who and what it holds."""
    before = audit.snapshot(group, GROUP_AUDIT_FIELDS)
    if name is not None:
        group.name = name
    if description is not None:
        group.description = description
    group.save()
    if members is not None:
        group.members.set(list(members))
    if machines is not None:
        group.machines.set(list(machines))
    after = audit.snapshot(group, GROUP_AUDIT_FIELDS)
    audit.record("machine_group.update", actor=actor, target=group, before=before, after=after)
    return group


@transaction.atomic
def delete_machine_group(*, actor: User | None, group: MachineGroup) -> None:
    """Delete a scope; its machines stay, its members no longer see them through it."""
    audit.record(
        "machine_group.delete", actor=actor, target=group, before=audit.snapshot(group, GROUP_AUDIT_FIELDS)
    )
    group.delete()


@transaction.atomic
def update_machine(
    *,
    actor: User | None,
    machine: Machine,
    owner: str | None = None,
    jurisdiction: str | None = None,
    groups: Iterable[MachineGroup] | None = None,
) -> Machine:
    """Set the facts people own about a machine: its owner, jurisdiction and groups."""
    before = audit.snapshot(machine, MACHINE_AUDIT_FIELDS)
    if owner is not None:
        machine.owner = owner
    if jurisdiction is not None:
        machine.jurisdiction = jurisdiction
    machine.save()
    if groups is not None:
        machine.groups.set(list(groups))
    after = audit.snapshot(machine, MACHINE_AUDIT_FIELDS)
    audit.record("machine.update", actor=actor, target=machine, before=before, after=after)
    transaction.on_commit(lambda: publish_machine_event("machine.changed", machine, {"name": machine.name}))
    return machine
