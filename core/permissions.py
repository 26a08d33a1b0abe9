"""DRF permissions by role. Which rows a user sees is decided separately, by visible_to()."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from core.choices import GLOBAL_ROLES, Role


def _active(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


class IsBackupAdmin(BasePermission):
    """The default for every endpoint: backup admins only."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return _active(request.user) and request.user.role == Role.ADMIN


class ReadScopedWriteAdmin(BasePermission):
    """Every role reads (rows narrowed by visible_to); only backup admins change anything."""

    def has_permission(self, request: Any, view: Any) -> bool:
        if not _active(request.user):
            return False
        return request.method in SAFE_METHODS or request.user.role == Role.ADMIN


class ReadsAudit(BasePermission):
    """Admins and auditors, read-only."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return _active(request.user) and request.user.role in GLOBAL_ROLES and request.method in SAFE_METHODS


class IsSignedIn(BasePermission):
    """Any active account (for one's own profile and tokens)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return _active(request.user)
