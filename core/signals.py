"""Sign-ins, sign-outs and failed sign-ins go to the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from core import audit, throttle
from core.middleware import client_address


@receiver(user_logged_in)
def audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    throttle.clear_failures(user.get_username())
    audit.record(
        "auth.login", actor=user, target=user, ip_address=client_address(request) if request else None
    )


@receiver(user_logged_out)
def audit_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record(
            "auth.logout", actor=user, target=user, ip_address=client_address(request) if request else None
        )


@receiver(user_login_failed)
def audit_login_failure(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # credentials has the password masked by Django already; only the user name is kept.
    username = str(credentials.get("username", ""))[:150]
    address = client_address(request) if request is not None else None
    throttle.note_failure(username, address)
    audit.record("auth.login_failed", actor=None, target_repr=username, ip_address=address)
