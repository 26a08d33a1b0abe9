"""Machines and their disks, and the machine groups that scope what help-desk operators and owners see."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.models import Credential
from core.querysets import AdminOnlyQuerySet
from inventory.choices import (
    ChangeKind,
    DiscoveryState,
    DiscoveryTrigger,
    MachineKind,
    Platform,
    SourceKind,
    SourceState,
    WatchState,
)
from inventory.querysets import (
    AgentQuerySet,
    DiskQuerySet,
    MachineChangeQuerySet,
    MachineGroupQuerySet,
    MachineQuerySet,
)

if TYPE_CHECKING:
    from connectors.base import Endpoint


class MachineGroup(models.Model):
    """A set of machines and the people scoped to them (help-desk operators, application owners)."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="machine_groups")
    # Membership by rule: with any of these set, the group holds exactly the present machines that match all of
    # them (shell patterns, a comma between alternatives), kept up to date by every discovery.
    match_name = models.CharField(max_length=500, blank=True, help_text="e.g. fin-*, erp-??")
    match_folder = models.CharField(max_length=500, blank=True, help_text="e.g. /Finance (and below)")
    match_tags = models.CharField(max_length=500, blank=True, help_text="e.g. dept:finance")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MachineGroupQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def by_rule(self) -> bool:
        return bool(self.match_name or self.match_folder or self.match_tags)


class Source(models.Model):
    """A vCenter, an ESXi host or a Hyper-V host or cluster that Bulwark discovers machines from."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=SourceKind.choices)
    address = models.CharField(max_length=255, help_text="Host name or IP address.")
    port = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: 443 (vSphere), 5986/5985 (WinRM)."
    )
    credential = models.ForeignKey(Credential, on_delete=models.PROTECT, related_name="sources")
    verify_tls = models.BooleanField(
        default=True, help_text="Check the server certificate (strongly advised)."
    )
    ca_certificate = models.TextField(blank=True, help_text="Extra trusted CA certificate(s), PEM.")
    thumbprint = models.CharField(
        max_length=100, blank=True, help_text="Or pin the server certificate by its SHA-256 fingerprint."
    )
    options = models.JSONField(default=dict, blank=True)
    site = models.CharField(max_length=64, blank=True)
    jurisdiction = models.CharField(
        max_length=64, blank=True, help_text="Given to discovered machines that have none, e.g. EU."
    )
    enabled = models.BooleanField(default=True)
    discovery_interval_minutes = models.PositiveIntegerField(default=60)
    watch = models.BooleanField(default=True, help_text="Follow changes live between discoveries (vSphere).")
    watch_state = models.CharField(
        max_length=16, choices=WatchState.choices, default=WatchState.OFF, editable=False
    )
    watch_detail = models.CharField(max_length=500, blank=True, editable=False)
    watch_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    remote_id = models.CharField(max_length=100, blank=True, editable=False)
    product = models.CharField(max_length=255, blank=True, editable=False)
    topology = models.JSONField(default=dict, blank=True, editable=False)
    state = models.CharField(max_length=16, choices=SourceState.choices, default=SourceState.NEW)
    last_error = models.TextField(blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def platform(self) -> str:
        return SourceKind(self.kind).platform

    def endpoint(self, *, timeout: float = 20.0) -> Endpoint:
        """What a connector needs, with the secret decrypted (only for the connection; never logged).

        Raises OutboundDenied when the address is in BULWARK_OUTBOUND_DENY (checked before every connection,
        not only when the source was saved: names resolve anew)."""
        from connectors import outbound
        from connectors.base import Endpoint

        outbound.check(self.address, settings.BULWARK_OUTBOUND_NETWORKS)
        return Endpoint(
            kind=self.platform,
            address=self.address,
            port=self.port,
            username=self.credential.username,
            secret=self.credential.reveal(),
            verify_tls=self.verify_tls,
            ca_pem=self.ca_certificate,
            thumbprint=self.thumbprint,
            timeout=timeout,
            options=dict(self.options),
        )


class DiscoveryRun(models.Model):
    """One discovery of one source: queued, running, then succeeded or failed with its reason."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="discoveries")
    state = models.CharField(max_length=16, choices=DiscoveryState.choices, default=DiscoveryState.QUEUED)
    trigger = models.CharField(max_length=16, choices=DiscoveryTrigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who runs it ("host:pid") and its last sign of life: a run whose process died is not waited for forever.
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    phase = models.CharField(max_length=100, blank=True)
    found = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    gone = models.PositiveIntegerField(default=0)
    returned = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-queued_at", "-pk"]
        indexes = [models.Index(fields=["source", "-queued_at"])]

    def __str__(self) -> str:
        return f"discovery of {self.source} ({self.state})"

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


def natural_key(name: str) -> str:
    """A sort key that orders names as people read them: digit runs padded to 12 places, case folded."""
    return re.sub(r"\d+", lambda match: match.group().zfill(12), name.casefold())[:400]


class Machine(models.Model):
    """A physical server or a virtual machine, known by a stable identity rather than by its name.

    native_identity is what the platform reports and survives renames and moves: "vsphere:<instanceUuid>",
    "hyperv:<VM Id>", "agent:<machine id>". It is unique within its source only: two vCenters may report the
    same instanceUuid (a cloned appliance, a test copy of production), and each then has its own machine.
    identity is unique across Bulwark and names the machine's snapshots in repositories: the native identity,
    or "<native>@<source id>" when another machine holds it already. A machine that disappears is marked gone,
    never deleted, so its recovery points stay reachable.
    """

    identity = models.CharField(max_length=200, unique=True)
    native_identity = models.CharField(max_length=200, db_index=True, default="")
    name = models.CharField(max_length=255, db_index=True)
    # The name with each run of digits zero-padded, so an ordinary ORDER BY sorts VM2 before VM10.
    sort_name = models.CharField(max_length=400, db_index=True, default="", editable=False)
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
    # Where and what the platform says it is (refreshed by every discovery).
    source = models.ForeignKey(
        Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="machines"
    )
    external_id = models.CharField(max_length=200, blank=True, help_text="Managed object id, VM Id.")
    bios_uuid = models.CharField(max_length=64, blank=True)
    power_state = models.CharField(max_length=32, blank=True)
    datacenter = models.CharField(max_length=255, blank=True)
    cluster = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=255, blank=True)
    folder = models.CharField(max_length=1000, blank=True)
    resource_pool = models.CharField(max_length=1000, blank=True)
    datastores = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    ip_addresses = models.JSONField(default=list, blank=True)
    template = models.BooleanField(default=False)
    facts = models.JSONField(default=dict, blank=True)

    objects = MachineQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["source", "native_identity"], name="machine_identity_per_source")
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.native_identity:
            self.native_identity = self.identity
        self.sort_name = natural_key(self.name)
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "name" in update_fields:
            kwargs["update_fields"] = {*update_fields, "sort_name"}
        super().save(*args, **kwargs)

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
    path = models.CharField(max_length=1000, blank=True, help_text="[datastore] path, VHDX path, device.")
    change_tracking = models.BooleanField(null=True, blank=True, help_text="CBT / RCT enabled.")

    objects = DiskQuerySet.as_manager()

    class Meta:
        ordering = ["machine", "key"]
        constraints = [models.UniqueConstraint(fields=["machine", "key"], name="disk_unique_key_per_machine")]

    def __str__(self) -> str:
        return f"{self.machine} / {self.label or self.key}"


class MachineChange(models.Model):
    """A machine's history: discovered, renamed, moved, gone, back, protection changed."""

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="changes")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=16, choices=ChangeKind.choices)
    summary = models.CharField(max_length=500)
    detail = models.JSONField(default=dict, blank=True)

    objects = MachineChangeQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["machine", "-at"])]

    def __str__(self) -> str:
        return f"{self.machine}: {self.summary}"


class EnrolmentToken(models.Model):
    """A one-time token an agent presents to enrol its host. Only a digest is stored."""

    label = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    groups = models.ManyToManyField(MachineGroup, blank=True, help_text="Machine groups the new host joins.")
    machine = models.ForeignKey(
        "Machine",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Re-enrol this existing host (an admin's explicit choice); the token enrols nothing else.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.label} ({self.prefix}…)"

    @property
    def usable(self) -> bool:
        return self.used_at is None and self.revoked_at is None and self.expires_at > timezone.now()


class Agent(models.Model):
    """The agent on a physical host: its key (digest only), version and heartbeats."""

    machine = models.OneToOneField(Machine, on_delete=models.CASCADE, related_name="agent")
    key_prefix = models.CharField(max_length=12, editable=False)
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    version = models.CharField(max_length=32, blank=True)
    enrolled_at = models.DateTimeField(default=timezone.now)
    enrolled_with = models.ForeignKey(EnrolmentToken, null=True, blank=True, on_delete=models.SET_NULL)
    heartbeat_seconds = models.PositiveIntegerField(default=60)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_address = models.GenericIPAddressField(null=True, blank=True)
    online = models.BooleanField(default=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AgentQuerySet.as_manager()

    def __str__(self) -> str:
        return f"agent on {self.machine}"
