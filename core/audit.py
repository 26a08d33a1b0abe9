"""The audit trail: every service that changes state calls record().

Who and from where come from the request through AuditContextMiddleware (or are passed explicitly by tasks
and commands); before/after are JSON snapshots of the fields that matter, never of secrets.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import models, transaction

from core.models import AuditEvent, User


@dataclass(frozen=True)
class AuditContext:
    # The request, not its user: DRF authenticates API tokens after the middleware has run, and sets the
    # user on the underlying request, so the user is read when an event is recorded.
    request: Any
    ip_address: str | None

    @property
    def user(self) -> User | None:
        user = getattr(self.request, "user", None)
        return user if user is not None and user.is_authenticated else None


_context: ContextVar[AuditContext | None] = ContextVar("bulwark_audit_context", default=None)


@contextmanager
def audit_context(*, request: Any, ip_address: str | None) -> Iterator[None]:
    """Attribute the audit events recorded inside this block to the request's user and ip_address."""
    token = _context.set(AuditContext(request=request, ip_address=ip_address))
    try:
        yield
    finally:
        _context.reset(token)


def _json_value(value: Any) -> Any:
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return sorted(_json_value(item) for item in value)
    return value


def snapshot(instance: models.Model, fields: Iterable[str]) -> dict[str, Any]:
    """A JSON-safe picture of some fields; many-to-many fields become sorted lists of primary keys."""
    picture: dict[str, Any] = {}
    for name in fields:
        field = instance._meta.get_field(name)
        if field.many_to_many:
            picture[name] = (
                sorted(getattr(instance, name).values_list("pk", flat=True)) if instance.pk else []
            )
        else:
            picture[name] = _json_value(getattr(instance, field.attname))
    return picture


def record(
    action: str,
    *,
    actor: User | None = None,
    target: models.Model | None = None,
    target_repr: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    ip_address: str | None = None,
) -> AuditEvent:
    """Append one audit event; actor and address default to the current request's."""
    context = _context.get()
    if actor is None and context is not None:
        actor = context.user
    if ip_address is None and context is not None:
        ip_address = context.ip_address
    event = AuditEvent(
        actor=actor if actor is not None and actor.pk else None,
        actor_name=actor.get_username() if actor is not None else "",
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None and target.pk is not None else "",
        target_repr=(target_repr if target_repr is not None else str(target) if target is not None else "")[
            :255
        ],
        ip_address=ip_address,
        before=before,
        after=after,
    )
    event.save()
    from core.events import publish_audit_event

    transaction.on_commit(lambda: publish_audit_event(event))
    return event
