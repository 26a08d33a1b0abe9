"""Sign-ins, sign-outs and failed sign-ins go to the audit log; a sign-out or a change of a user's rights
re-checks the user's open sockets."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save, pre_delete
from django.dispatch import receiver

from core import audit, events, throttle
from core.middleware import client_address
from core.models import User


@receiver(user_logged_in)
def audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    throttle.clear_failures(user.get_username(), client_address(request) if request else None)
    audit.record(
        "auth.login", actor=user, target=user, ip_address=client_address(request) if request else None
    )


@receiver(user_logged_out)
def audit_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record(
            "auth.logout", actor=user, target=user, ip_address=client_address(request) if request else None
        )
        session = getattr(request, "session", None)
        events.publish_access_changed(users=[user.pk], session_key=getattr(session, "session_key", None))


@receiver(post_save, sender=User)
def recheck_sockets_of_saved_user(sender: Any, instance: User, created: bool, **kwargs: Any) -> None:
    # A password, role or is_active change; re-checking on any save is cheap and never misses a field.
    if not created:
        events.publish_access_changed(users=[instance.pk])


@receiver(pre_delete, sender=User)
def recheck_sockets_of_deleted_user(sender: Any, instance: User, **kwargs: Any) -> None:
    events.publish_access_changed(users=[instance.pk])


@receiver(user_login_failed)
def audit_login_failure(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # credentials has the password masked by Django already; only the user name is kept.
    username = str(credentials.get("username", ""))[:150]
    address = client_address(request) if request is not None else None
    throttle.note_failure(username, address)
    audit.record("auth.login_failed", actor=None, target_repr=username, ip_address=address)
