"""Page access: anonymous visitors go to the sign-in page; a signed-in user without the role gets 403."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from django.utils.functional import cached_property

from core.choices import Role

ALL_ROLES = frozenset(Role)
ADMIN_ONLY = frozenset({Role.ADMIN})
AUDIT_READERS = frozenset({Role.ADMIN, Role.AUDITOR})
# Self-service file restores: admins, and help-desk operators for the machines in their scope.
FILE_RESTORERS = frozenset({Role.ADMIN, Role.HELPDESK})
# The restore history: every restore (admins, auditors), one's own (help desk).
RESTORE_READERS = frozenset({Role.ADMIN, Role.AUDITOR, Role.HELPDESK})


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


class ScopedObjectFormMixin:
    """A form page that edits one object, looked up through visible_to() by the URL's pk.

    The lookup happens lazily, after RoleRequiredMixin.dispatch has checked the role, so a wrong role gets 403
    and an object outside the user's scope gets 404, never the other way round.
    """

    model: type[Model]
    request: HttpRequest
    kwargs: dict[str, Any]

    @cached_property
    def object(self) -> Any:
        return get_object_or_404(self.model.objects.visible_to(self.request.user), pk=self.kwargs["pk"])  # type: ignore[attr-defined]

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "instance": self.object}  # type: ignore[misc]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "object": self.object}  # type: ignore[misc]


def posted_id(value: str | None) -> int:
    """A form's id field as a number; anything else (text, a number past the database's range) names no object,
    so a lookup finds nothing instead of failing."""
    return int(value) if value and value.isdigit() and len(value) < 19 else 0


def posted_ids(values: list[str]) -> list[int]:
    return [number for number in map(posted_id, values) if number]
