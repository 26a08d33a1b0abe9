"""Reads start here: every model holding machine data has a queryset with visible_to(user).

Modelled on NetBox's RestrictedQuerySet.restrict(): pages, API and WebSocket subscriptions all call the same
method, so a scope rule lives in exactly one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from django.db import models

from core.choices import GLOBAL_ROLES, Role

if TYPE_CHECKING:
    from core.models import User


def is_active_user(user: object) -> bool:
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


class ScopedQuerySet(models.QuerySet):
    """Rows tied to machines: admins and auditors see all, everyone else the machines of their groups."""

    # Lookup path from this model to inventory.Machine; empty for Machine itself.
    machine_path = ""

    def visible_to(self, user: User | object) -> Self:
        if not is_active_user(user):
            return self.none()
        if user.role in GLOBAL_ROLES:  # type: ignore[attr-defined]
            return self.all()
        prefix = f"{self.machine_path}__" if self.machine_path else ""
        # A subquery, not distinct(): a machine in two of the user's groups must appear once, and distinct()
        # would break later ordering and aggregation on the caller's side.
        visible = self.model._default_manager.filter(**{f"{prefix}groups__members": user}).values("pk")
        return self.filter(pk__in=visible)


class AdminOnlyQuerySet(models.QuerySet):
    """Administrative rows (credentials, repository settings): backup admins only."""

    def visible_to(self, user: User | object) -> Self:
        if is_active_user(user) and user.role == Role.ADMIN:  # type: ignore[attr-defined]
            return self.all()
        return self.none()


class AuditQuerySet(models.QuerySet):
    """The audit log: admins and auditors."""

    def visible_to(self, user: User | object) -> Self:
        if is_active_user(user) and user.role in GLOBAL_ROLES:  # type: ignore[attr-defined]
            return self.all()
        return self.none()


class OwnedQuerySet(models.QuerySet):
    """Rows that belong to one user (API tokens): the owner sees theirs, admins see all."""

    def visible_to(self, user: User | object) -> Self:
        if not is_active_user(user):
            return self.none()
        if user.role == Role.ADMIN:  # type: ignore[attr-defined]
            return self.all()
        return self.filter(user=user)
