"""Where repository objects live. The engine only ever talks to this interface."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime.datetime


class Storage(Protocol):
    """A flat namespace of immutable objects addressed by '/'-separated keys."""

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None = None, durable: bool = True
    ) -> None:
        """Store an object durably; when this returns, the object survives a crash. Replaces any old one.
        `durable=False`: visible to every reader at once, but a power cut may lose it (a lease, which dies with
        its holder anyway): the storage may skip its flushes."""

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read an object, or a byte range of it. ObjectMissing if it does not exist."""

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or None."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix."""

    def delete(self, key: str) -> None:
        """Remove an object; missing objects are not an error. Refused (StorageError) while it is locked."""

    def now(self) -> datetime.datetime:
        """The storage's own clock (used for grace periods, so a skewed client clock cannot shorten them)."""

    def describe(self) -> str:
        """Where this is, for messages (never includes secrets)."""
