"""Typed readers for settings taken from environment variables.

Each helper fails loudly (ImproperlyConfigured naming the variable) on a value it cannot use, instead of
silently falling back to a default. Secrets may come from NAME or from a file named by NAME_FILE (the way
container orchestrators mount them); giving both is an error because one would silently win.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class Env:
    """Reads typed values from a mapping (os.environ by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ

    def _raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self._raw(name)
        return default if value is None else value

    def bool(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in TRUE_WORDS:
            return True
        if lowered in FALSE_WORDS:
            return False
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
        )

    def int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum {maximum}")
        return number

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self._raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def url(self, name: str, default: str | None, *, schemes: tuple[str, ...]) -> str | None:
        value = self.str(name, default)
        if value is None:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in schemes:
            raise ImproperlyConfigured(f"{name} must be a URL with one of the schemes {', '.join(schemes)}")
        return value

    def secret(self, name: str) -> str | None:
        """The value of NAME or the contents of the file named by NAME_FILE, never both."""
        direct = self._raw(name)
        file_name = self._raw(f"{name}_FILE")
        if direct is not None and file_name is not None:
            raise ImproperlyConfigured(f"set {name} or {name}_FILE, not both")
        if file_name is None:
            return direct
        try:
            content = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ImproperlyConfigured(
                f"{name}_FILE={file_name!r} cannot be read: {error.strerror}"
            ) from None
        if not content:
            raise ImproperlyConfigured(f"{name}_FILE={file_name!r} is empty")
        return content


def persistent_secret(path: Path, make: Callable[[], str] | None = None) -> str:
    """Read a secret kept in the data directory, creating it (mode 0600) the first time.

    Used only for embedded installs that set no key: the key must survive restarts, or sessions and stored
    credentials would become unreadable.
    """
    if path.exists():
        content = path.read_text(encoding="utf-8").strip()
        if not content:
            raise ImproperlyConfigured(f"{path} is empty; delete it to generate a new key, or restore it")
        return content
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make() if make is not None else secrets.token_urlsafe(50)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value
