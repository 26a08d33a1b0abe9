from __future__ import annotations

from typing import Self

from django.db import models

from core.choices import GLOBAL_ROLES
from core.querysets import ScopedQuerySet, is_active_user


class AssignmentQuerySet(ScopedQuerySet):
    machine_path = "machine"


class BackupRunQuerySet(ScopedQuerySet):
    machine_path = "machine"


class PolicyQuerySet(models.QuerySet):
    """Everyone signed in may read policy names and targets (a machine page shows its policy)."""

    def visible_to(self, user: object) -> Self:
        return self.all() if is_active_user(user) else self.none()


class AlertQuerySet(models.QuerySet):
    """Admins and auditors see every alert; others the alerts about machines in their scope."""

    def visible_to(self, user: object) -> Self:
        if not is_active_user(user):
            return self.none()
        if user.role in GLOBAL_ROLES:  # type: ignore[attr-defined]
            return self.all()
        from inventory.models import Machine

        return self.filter(machine__in=Machine.objects.visible_to(user).values("pk"))

    def open(self) -> Self:
        return self.filter(resolved_at__isnull=True)
