from __future__ import annotations

import factory

from core.choices import Role
from core.models import User
from inventory.choices import MachineKind, Platform
from inventory.models import Disk, Machine, MachineGroup

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    role = Role.OWNER
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            self.save()


class MachineGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MachineGroup
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"group-{n}")

    @factory.post_generation
    def members(self, create: bool, extracted: list[User] | None, **kwargs: object) -> None:
        if create and extracted:
            self.members.set(extracted)


class MachineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Machine
        skip_postgeneration_save = True

    identity = factory.Sequence(lambda n: f"vsphere:5003a1b2-0000-0000-0000-{n:012d}")
    native_identity = factory.LazyAttribute(lambda machine: machine.identity)
    name = factory.Sequence(lambda n: f"vm-{n:03d}")
    kind = MachineKind.VM
    platform = Platform.VSPHERE
    hostname = factory.LazyAttribute(lambda machine: f"{machine.name}.corp.example")
    guest_os = "Debian GNU/Linux 12 (64-bit)"

    @factory.post_generation
    def groups(self, create: bool, extracted: list[MachineGroup] | None, **kwargs: object) -> None:
        if create and extracted:
            self.groups.set(extracted)


class DiskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Disk

    machine = factory.SubFactory(MachineFactory)
    key = factory.Sequence(lambda n: f"disk-{n}")
    label = "Hard disk 1"
    capacity_bytes = 40 * 1024**3
