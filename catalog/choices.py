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
