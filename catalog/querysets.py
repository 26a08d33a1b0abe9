from __future__ import annotations

from core.querysets import ScopedQuerySet


class RecoveryPointQuerySet(ScopedQuerySet):
    machine_path = "machine"


class FileVersionQuerySet(ScopedQuerySet):
    machine_path = "machine"
