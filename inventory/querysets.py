from __future__ import annotations

from typing import Self

from django.db import models

from core.choices import GLOBAL_ROLES
from core.querysets import ScopedQuerySet, is_active_user


class MachineQuerySet(ScopedQuerySet):
    machine_path = ""

    def present(self) -> Self:
        return self.filter(gone_since__isnull=True)

    def gone(self) -> Self:
        return self.filter(gone_since__isnull=False)


class DiskQuerySet(ScopedQuerySet):
    machine_path = "machine"


class MachineChangeQuerySet(ScopedQuerySet):
    machine_path = "machine"


class AgentQuerySet(ScopedQuerySet):
    machine_path = "machine"


class MachineGroupQuerySet(models.QuerySet):
    """Admins and auditors see every group; others the groups they belong to."""

    def visible_to(self, user: object) -> Self:
        if not is_active_user(user):
            return self.none()
        if user.role in GLOBAL_ROLES:  # type: ignore[attr-defined]
            return self.all()
        return self.filter(members=user)
