"""Errors the engine raises. Each says what is wrong and, where it can, which object is affected."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every engine error."""


class RepositoryNotFound(EngineError):
    pass


class RepositoryExists(EngineError):
    pass


class WrongPassphrase(EngineError):
    """No key slot opens with the given passphrase."""


class ObjectMissing(EngineError):
    """A stored object (pack, index, snapshot) that should exist does not."""


class IntegrityError(EngineError):
    """Stored data failed authentication or its id check: it was damaged or tampered with.

    Never silently ignored: a read that hits it fails rather than return wrong bytes.
    """


class StorageError(EngineError):
    """The storage back end failed (I/O error, network, refused request)."""


class LockedError(EngineError):
    """Another process holds a lock that conflicts with this operation."""


class UnsafePath(EngineError):
    """A path in a snapshot would leave the restore target."""
