"""Page access: anonymous visitors go to the sign-in page; a signed-in user without the role gets 403."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase

from core.choices import Role

ALL_ROLES = frozenset(Role)
ADMIN_ONLY = frozenset({Role.ADMIN})
AUDIT_READERS = frozenset({Role.ADMIN, Role.AUDITOR})


class RoleRequiredMixin(LoginRequiredMixin):
    """Every page view inherits this and states its roles; there is no default that lets everyone in."""

    allowed_roles: frozenset[Role]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = request.user
        if not user.is_authenticated:
            return self.handle_no_permission()
        if not user.is_active or user.role not in self.allowed_roles:  # type: ignore[union-attr]
            raise PermissionDenied("Your role does not give access to this page.")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[no-any-return]
