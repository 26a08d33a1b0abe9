"""Repositories (where backups are stored) and recovery points (committed snapshots of machines in them).

The catalog sits below protection: a point names the run that made it by a string reference, so this module
imports nothing of protection.
"""

from __future__ import annotations

from django.db import models

from catalog.choices import PointKind, RepositoryKind, Tier
from catalog.querysets import RecoveryPointQuerySet
from core.models import Credential
from core.querysets import AdminOnlyQuerySet
from inventory.models import Machine


class Repository(models.Model):
    """Where backups are stored: an engine repository in a folder or an S3 bucket, at a site, in a jurisdiction."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=RepositoryKind.choices, default=RepositoryKind.LOCAL)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.PRIMARY)
    path = models.CharField(max_length=1000, blank=True, help_text="Folder (local) or bucket/prefix (S3).")
    endpoint = models.URLField(blank=True, help_text="S3 endpoint URL; empty for AWS.")
    s3_credential = models.ForeignKey(
        Credential, null=True, blank=True, on_delete=models.PROTECT, related_name="+", help_text="Access key."
    )
    passphrase = models.ForeignKey(Credential, on_delete=models.PROTECT, related_name="+")
    site = models.CharField(max_length=64, blank=True)
    jurisdiction = models.CharField(max_length=64, blank=True)
    immutable_days = models.PositiveIntegerField(default=0, help_text="S3 Object Lock retention; 0: none.")
    block_size = models.PositiveIntegerField(default=64 * 1024)
    created_at = models.DateTimeField(auto_now_add=True)
    # Health, from the periodic check (protection.schedule.check_repositories): empty problem = reachable.
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    problem = models.TextField(blank=True, editable=False)

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        db_table = "protection_repository"  # moved from protection (state-only migrations keep the table)
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name


class RecoveryPoint(models.Model):
    """One committed engine snapshot of one machine in one repository."""

    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="recovery_points")
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="recovery_points")
    # One run may commit several points: an agent's files and its volumes are two snapshots.
    run = models.ForeignKey(
        "protection.BackupRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="points"
    )
    snapshot_id = models.CharField(max_length=100)
    taken_at = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=PointKind.choices, default=PointKind.IMAGE)
    logical_bytes = models.BigIntegerField(default=0)
    new_bytes = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    consistent = models.BooleanField(default=False, help_text="Taken from a quiesced snapshot.")
    # Per disk: the change id this point was read at (vSphere CBT / Hyper-V RCT), the disk identity it belongs to.
    disks = models.JSONField(default=list, blank=True)

    objects = RecoveryPointQuerySet.as_manager()

    class Meta:
        ordering = ["-taken_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "snapshot_id"], name="point_unique_snapshot_per_repository"
            )
        ]

    def __str__(self) -> str:
        return f"{self.machine} @ {self.taken_at:%Y-%m-%d %H:%M}"
