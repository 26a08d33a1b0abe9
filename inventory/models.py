"""Machines and their disks, and the machine groups that scope what help-desk operators and owners see."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from inventory.choices import MachineKind, Platform
from inventory.querysets import DiskQuerySet, MachineGroupQuerySet, MachineQuerySet


class MachineGroup(models.Model):
    """A set of machines and the people scoped to them (help-desk operators, application owners)."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="machine_groups")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MachineGroupQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Machine(models.Model):
    """A physical server or a virtual machine, known by a stable identity rather than by its name.

    identity is platform-specific and survives renames and moves: "vsphere:<instanceUuid>",
    "hyperv:<VM Id>", "agent:<machine id>". A machine that disappears is marked gone, never deleted, so its
    recovery points stay reachable.
    """

    identity = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=255, db_index=True)
    kind = models.CharField(max_length=16, choices=MachineKind.choices)
    platform = models.CharField(max_length=16, choices=Platform.choices)
    hostname = models.CharField(max_length=255, blank=True)
    guest_os = models.CharField(max_length=255, blank=True)
    owner = models.CharField(max_length=255, blank=True, help_text="Application owner (person or team).")
    jurisdiction = models.CharField(max_length=64, blank=True, help_text="Where its data may live, e.g. EU.")
    groups = models.ManyToManyField(MachineGroup, blank=True, related_name="machines")
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    gone_since = models.DateTimeField(null=True, blank=True)

    objects = MachineQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_gone(self) -> bool:
        return self.gone_since is not None

    @property
    def provisioned_bytes(self) -> int:
        return sum(disk.capacity_bytes for disk in self.disks.all())


class Disk(models.Model):
    """One virtual or physical disk of a machine."""

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="disks")
    key = models.CharField(max_length=100, help_text="Stable id within the machine (device key, disk UUID).")
    label = models.CharField(max_length=255, blank=True)
    capacity_bytes = models.BigIntegerField()

    objects = DiskQuerySet.as_manager()

    class Meta:
        ordering = ["machine", "key"]
        constraints = [models.UniqueConstraint(fields=["machine", "key"], name="disk_unique_key_per_machine")]

    def __str__(self) -> str:
        return f"{self.machine} / {self.label or self.key}"
