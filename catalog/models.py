"""Recovery points: committed snapshots of machines, by repository (the file catalog joins later)."""

from __future__ import annotations

from django.db import models

from catalog.querysets import RecoveryPointQuerySet
from inventory.models import Machine
from protection.models import BackupRun, Repository


class RecoveryPoint(models.Model):
    """One committed engine snapshot of one machine in one repository."""

    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="recovery_points")
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="recovery_points")
    # One run may commit several points: an agent's files and its volumes are two snapshots.
    run = models.ForeignKey(
        BackupRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="points"
    )
    snapshot_id = models.CharField(max_length=100)
    taken_at = models.DateTimeField()
    kind = models.CharField(max_length=16, default="image")
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
