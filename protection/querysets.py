from __future__ import annotations

from typing import Any, Self

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

        visible = Machine.objects.visible_to(user).values("pk")
        return self.filter(
            models.Q(machine__in=visible)
            | models.Q(pk__in=self.model.machines.through.objects.filter(machine__in=visible).values("alert"))
        )

    def open(self) -> Self:
        return self.filter(resolved_at__isnull=True)


def visible_entries(alert: Any, user: object) -> Any:
    """The machines a grouped alert lists that `user` may see (with their causes)."""
    from inventory.models import Machine

    entries = alert.entries.select_related("machine")
    if is_active_user(user) and user.role in GLOBAL_ROLES:  # type: ignore[attr-defined]
        return entries
    return entries.filter(machine__in=Machine.objects.visible_to(user).values("pk"))
