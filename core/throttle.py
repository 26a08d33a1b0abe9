"""Sign-in throttling that nobody can turn against someone else.

- One user name from one address: LOGIN_FAILURE_LIMIT failures lock that pair for LOGIN_FAILURE_WINDOW. The
  same person signing in correctly from another address is not locked out by a stranger's guesses.
- One address: three times that many failures, whatever the names (one client guessing many accounts).
- One user name from many addresses (a spread-out guessing attack): ten times the limit within the window
  brings a short back-off of LOGIN_BACKOFF_SECONDS after each further failure, not a long lock.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

ADDRESS_FACTOR = 3
SPREAD_FACTOR = 10


def _pair(username: str, ip_address: str | None) -> str:
    return f"login-failures:pair:{username.lower()}:{ip_address or '-'}"


def _address(ip_address: str) -> str:
    return f"login-failures:ip:{ip_address}"


def _user(username: str) -> str:
    return f"login-failures:user:{username.lower()}"


def _backoff(username: str) -> str:
    return f"login-backoff:user:{username.lower()}"


def is_locked_out(username: str, ip_address: str | None) -> bool:
    limit = settings.LOGIN_FAILURE_LIMIT
    if (cache.get(_pair(username, ip_address)) or 0) >= limit:
        return True
    if ip_address and (cache.get(_address(ip_address)) or 0) >= limit * ADDRESS_FACTOR:
        return True
    return bool(cache.get(_backoff(username)))


def _count(key: str) -> int:
    # add() starts the window on the first failure; incr() keeps the original expiry.
    if cache.add(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:
        cache.set(key, 1, timeout=settings.LOGIN_FAILURE_WINDOW)
        return 1


def note_failure(username: str, ip_address: str | None) -> None:
    _count(_pair(username, ip_address))
    if ip_address:
        _count(_address(ip_address))
    if _count(_user(username)) >= settings.LOGIN_FAILURE_LIMIT * SPREAD_FACTOR:
        cache.set(_backoff(username), 1, timeout=settings.LOGIN_BACKOFF_SECONDS)


def clear_failures(username: str, ip_address: str | None = None) -> None:
    """A successful sign-in forgets that pair's failures (and the name's spread count)."""
    cache.delete_many([_pair(username, ip_address), _user(username)])
