"""Restores: a whole machine image to files on the console's restore area or as a new VM; files back to an agent's
host, into a VM through VMware Tools, or downloaded; and the restore rules of machine groups (allowed targets,
extensions, a size cap, four-eyes approval)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import RecoveryPoint
from core.querysets import ScopedQuerySet
from inventory.models import Machine, MachineGroup


class RestoreKind(models.TextChoices):
    IMAGE_FILES = "image_files", "Disk images to files"
    NEW_VM = "new_vm", "A new VM on the source"
    FILES_TO_AGENT = "files_to_agent", "Files back to the agent host"
    DOWNLOAD = "download", "Files downloaded in the browser"
    FILES_TO_VM = "files_to_vm", "Files back into the VM"
    FILES_TO_SMB = "files_to_smb", "Files to an SMB share"


class Conflict(models.TextChoices):
    """What a file restore does where a file of that name already exists."""

    OVERWRITE = "overwrite", "Overwrite"
    KEEP_BOTH = "keep_both", "Keep both (restored copy beside it)"
    SKIP = "skip", "Skip"


class RestoreState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting", "Awaiting approval"
    REFUSED = "refused", "Refused"
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
    volume = models.CharField(
        max_length=200, blank=True, help_text="File restores from an image: the volume the paths are on."
    )
    conflict = models.CharField(max_length=16, choices=Conflict.choices, default=Conflict.KEEP_BOTH)
    smb_credential = models.ForeignKey(
        "core.Credential",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Restores to an SMB share: the login (an admin's SMB credential) it is written with.",
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
    # Four-eyes approval, where the machine's group demands it: who decided, when, and why (a refusal's reason).
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.CharField(max_length=500, blank=True)

    objects = RestoreQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"restore of {self.machine} ({self.get_kind_display()})"

    @property
    def seconds(self) -> float | None:
        """How long it ran (None until it has started and ended)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class RestoreTarget(models.TextChoices):
    IN_PLACE = "in_place", "The original location"
    OTHER_FOLDER = "other_folder", "Another folder on the machine"
    DOWNLOAD = "download", "A browser download"
    SMB = "smb", "A folder on an SMB share"


class RestoreRule(models.Model):
    """What help-desk operators may restore from a group's machines (admins are not bound by it): the targets, the
    file extensions, a size cap, and whether an admin must approve each restore first."""

    group = models.OneToOneField(MachineGroup, on_delete=models.CASCADE, related_name="restore_rule")
    allow_in_place = models.BooleanField(
        default=True, help_text="Back to the original location in the machine."
    )
    allow_other_folder = models.BooleanField(default=True, help_text="Into another folder on the machine.")
    allow_download = models.BooleanField(default=True, help_text="Downloaded in the browser.")
    allow_smb = models.BooleanField(
        default=True, help_text="Into a folder of an SMB share (with an admin's login)."
    )
    extensions = models.CharField(
        max_length=500,
        blank=True,
        help_text="Only these file extensions, e.g. 'docx, xlsx, pdf' (empty: any).",
    )
    max_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="At most this many bytes per restore (empty: no cap)."
    )
    requires_approval = models.BooleanField(
        default=False, help_text="Four-eyes: an admin approves each restore before it runs."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["group__name"]

    def __str__(self) -> str:
        return f"restore rule of {self.group}"

    @property
    def extension_list(self) -> list[str]:
        return sorted(
            {part.strip().lstrip(".").lower() for part in self.extensions.split(",") if part.strip()}
        )
