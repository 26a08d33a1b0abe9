"""Choices of the catalog: where repositories store, their tier, and what a recovery point holds."""

from __future__ import annotations

from django.db import models


class RepositoryKind(models.TextChoices):
    LOCAL = "local", "Local or NFS folder"
    S3 = "s3", "S3-compatible object storage"


class Tier(models.TextChoices):
    PRIMARY = "primary", "Primary"
    COPY = "copy", "Copy"
    ARCHIVE = "archive", "Archive"


class PointKind(models.TextChoices):
    IMAGE = "image", "Disk images"
    FILES = "files", "Files"


class CatalogState(models.TextChoices):
    """How far the files inside a point's disk images are known (a backup never fails because of this)."""

    PENDING = "pending", "Waiting"
    RUNNING = "running", "Cataloguing"
    COMPLETE = "complete", "Complete"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"
    NONE = "none", "Not catalogued"  # a copy: its original point in the primary repository holds the catalog


class EntryKind(models.TextChoices):
    FILE = "file", "File"
    DIR = "dir", "Folder"
    SYMLINK = "symlink", "Symbolic link"
    HARDLINK = "hardlink", "Hard link"
    OTHER = "other", "Other"
