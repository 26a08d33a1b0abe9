"""The catalog tests' repository fixture: raw disks stored as image points, one day apart, as backup runs store them."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from django.utils import timezone

from catalog import repositories
from catalog.choices import PointKind
from catalog.models import RecoveryPoint
from catalog.services import create_repository, record_point
from engine.image import ImageWriter


@pytest.fixture
def store(tmp_path: Path, settings, estate):  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    machine = estate.finance_vm  # in the help-desk operator's scope
    clock = [timezone.now() - datetime.timedelta(days=10)]

    def back_up(*disks: Path) -> RecoveryPoint:
        """Store raw disks as one image point, as a backup run does, and record it."""
        engine = repositories.open_repository(repository)
        writer = ImageWriter(engine, machine=machine.identity)
        for number, disk in enumerate(disks):
            with open(disk, "rb") as source:
                writer.write_disk(f"{2000 + number}", source, size=disk.stat().st_size)
        snapshot = writer.commit()
        clock[0] += datetime.timedelta(days=1)
        point = record_point(
            machine=machine,
            repository=repository,
            run_id=None,
            snapshot=snapshot,
            kind=PointKind.IMAGE,
            consistent=True,
            disks=[],
        )
        RecoveryPoint.objects.filter(pk=point.pk).update(taken_at=clock[0])
        point.refresh_from_db()
        return point

    return back_up
