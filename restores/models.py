"""Restores: a whole machine image to files on the console's restore area, or as a new VM."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import RecoveryPoint
from core.querysets import ScopedQuerySet
from inventory.models import Machine


class RestoreKind(models.TextChoices):
    IMAGE_FILES = "image_files", "Disk images to files"
    NEW_VM = "new_vm", "A new VM on the source"
    FILES_TO_AGENT = "files_to_agent", "Files back to the agent host"
    DOWNLOAD = "download", "Files downloaded in the browser"


class RestoreState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class RestoreQuerySet(ScopedQuerySet):
    machine_path = "machine"


class RestoreRequest(models.Model):
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="restores")
    point = models.ForeignKey(RecoveryPoint, on_delete=models.PROTECT, related_name="restores")
    kind = models.CharField(max_length=16, choices=RestoreKind.choices)
    target = models.CharField(
        max_length=1000,
        help_text="Folder under the restore area, the new VM's name, or a folder on the agent host.",
    )
    paths = models.JSONField(
        default=list, blank=True, help_text="File restores: the chosen paths in the snapshot (empty: all)."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=RestoreState.choices, default=RestoreState.QUEUED)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    bytes_total = models.BigIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    objects = RestoreQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"restore of {self.machine} ({self.get_kind_display()})"
