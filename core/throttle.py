"""Sign-in throttling: too many failures for one user name or from one address locks sign-in for a while."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache


def _keys(username: str, ip_address: str | None) -> list[str]:
    keys = [f"login-failures:user:{username.lower()}"]
    if ip_address:
        keys.append(f"login-failures:ip:{ip_address}")
    return keys


def is_locked_out(username: str, ip_address: str | None) -> bool:
    return any((cache.get(key) or 0) >= settings.LOGIN_FAILURE_LIMIT for key in _keys(username, ip_address))


def note_failure(username: str, ip_address: str | None) -> None:
    for key in _keys(username, ip_address):
        # add() starts the window on the first failure; incr() keeps the original expiry.
        if not cache.add(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW):
            try:
                cache.incr(key)
            except ValueError:
                cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW)


def clear_failures(username: str) -> None:
    cache.delete(f"login-failures:user:{username.lower()}")
