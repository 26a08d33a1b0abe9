"""Repositories (where backups are stored) and recovery points (committed snapshots of machines in them).

The catalog sits below protection: a point names the run that made it by a string reference, so this module
imports nothing of protection.
"""

from __future__ import annotations

import datetime

from django.db import models
from django.utils import timezone

from catalog.choices import CatalogState, EntryKind, PointKind, RepositoryKind, Tier
from catalog.querysets import FileVersionQuerySet, RecoveryPointQuerySet
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
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # The files inside: complete, partial (volumes skipped or items unreadable, with why) or failed; per volume
    # its file system, state and reason; how many entries; what it cost.
    catalog_state = models.CharField(
        max_length=16, choices=CatalogState.choices, default=CatalogState.PENDING
    )
    catalog_started_at = models.DateTimeField(null=True, blank=True)
    catalog_detail = models.TextField(blank=True)
    catalog_volumes = models.JSONField(default=list, blank=True)
    catalog_entries = models.PositiveIntegerField(default=0)
    catalog_seconds = models.FloatField(default=0)
    catalog_read_bytes = models.BigIntegerField(default=0)

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


class PathName(models.Model):
    """A path, stored once however many machines, versions and points hold it (looked up by its digest: a path
    may be longer than an index entry can be)."""

    digest = models.CharField(max_length=32, unique=True)
    text = models.TextField()
    name = models.TextField()  # the last component, what people search for

    def __str__(self) -> str:
        return self.text


class FileVersion(models.Model):
    """One version of one path on one machine, seen unchanged from `first_point` to `last_point` (in that
    repository): a file unchanged for 300 backups is one row. Forgetting a point narrows or removes intervals."""

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="file_versions")
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="+")
    volume = models.CharField(max_length=200)  # "<disk>:p<n>", or "files" for an agent's file backup
    path = models.ForeignKey(PathName, on_delete=models.PROTECT, related_name="versions")
    parent = models.ForeignKey(PathName, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    size = models.BigIntegerField(default=0)
    mode = models.PositiveIntegerField(default=0)
    uid = models.BigIntegerField(null=True, blank=True)
    gid = models.BigIntegerField(null=True, blank=True)
    mtime_ns = models.BigIntegerField(null=True, blank=True)
    ctime_ns = models.BigIntegerField(null=True, blank=True)
    atime_ns = models.BigIntegerField(null=True, blank=True)
    link_target = models.TextField(blank=True)
    inode = models.BigIntegerField(null=True, blank=True)
    # [[file offset, disk offset, length], ...] on the point's disk, "resident", or null (read through the tree).
    extents = models.JSONField(null=True, blank=True)
    signature = models.CharField(max_length=32)  # what makes two sightings the same version
    first_point = models.ForeignKey(RecoveryPoint, on_delete=models.PROTECT, related_name="+")
    last_point = models.ForeignKey(RecoveryPoint, on_delete=models.PROTECT, related_name="+")
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    objects = FileVersionQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["machine", "repository", "last_point"]),
            models.Index(fields=["machine", "parent", "first_at", "last_at"]),
            models.Index(fields=["path"]),
        ]

    def __str__(self) -> str:
        return f"{self.path} on {self.machine_id} ({self.first_at:%Y-%m-%d} to {self.last_at:%Y-%m-%d})"

    @property
    def modified(self) -> datetime.datetime | None:
        from catalog.search import moment

        return moment(self.mtime_ns)


class CatalogIndex(models.Model):
    """What the walk of a point read for each entry and folder (zstd-compressed JSON, `catalog.incremental`), so
    that the next point's catalog reads again only what changed. Kept for the newest catalogued point of a
    machine in a repository; older ones are deleted when a newer one is stored."""

    point = models.OneToOneField(RecoveryPoint, on_delete=models.CASCADE, related_name="catalog_index")
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"catalog index of {self.point_id}"
