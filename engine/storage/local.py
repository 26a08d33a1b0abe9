"""A repository in a local (or NFS) directory: write to a temporary file, fsync, rename, fsync the folder."""

from __future__ import annotations

import contextlib
import datetime
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from engine.errors import ObjectMissing, StorageError
from engine.storage import ObjectInfo

TEMPORARY_SUFFIX = ".tmp"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in this folder durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class LocalStorage:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"local:{self.root}"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/") or not key:
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None = None, durable: bool = True
    ) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(descriptor, view)
                    view = view[written:]
                if durable:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, path)
            if durable:
                self._fsync_directory(path.parent)
        except OSError as error:
            raise StorageError(f"cannot write {key} to {self.root}: {error.strerror}") from error

    def sweep_temporaries(self, prefix: str, before: datetime.datetime) -> int:
        """Remove temporary files under prefix last written before `before` (their writer was killed: a live
        writer keeps writing, and one stalled that long fails its commit rather than publish anything)."""
        removed = 0
        start = self.root / prefix.rstrip("/")
        for directory, _, names in os.walk(start):
            for name in names:
                if not name.endswith(TEMPORARY_SUFFIX):
                    continue
                path = Path(directory) / name
                with contextlib.suppress(OSError):
                    modified = datetime.datetime.fromtimestamp(path.stat().st_mtime, tz=datetime.UTC)
                    if modified < before:
                        path.unlink()
                        removed += 1
        return removed

    def temporaries(self, prefix: str) -> list[ObjectInfo]:
        """Temporary files under prefix: objects being written, or left by a writer that was killed."""
        found = []
        for directory, _, names in os.walk(self.root / prefix.rstrip("/")):
            for name in names:
                if name.endswith(TEMPORARY_SUFFIX):
                    path = Path(directory) / name
                    with contextlib.suppress(OSError):
                        result = path.stat()
                        found.append(
                            ObjectInfo(
                                path.relative_to(self.root).as_posix(),
                                result.st_size,
                                datetime.datetime.fromtimestamp(result.st_mtime, datetime.UTC),
                            )
                        )
        return found

    def open_writer(self, key: str) -> LocalObjectWriter:
        """An object written piece by piece (a pack as its chunks are sealed), visible only once committed."""
        return LocalObjectWriter(self, key)

    @staticmethod
    def _fsync_directory(directory: Path) -> None:
        fsync_directory(directory)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                if offset:
                    handle.seek(offset)
                data = handle.read() if length is None else handle.read(length)
        except FileNotFoundError:
            raise ObjectMissing(f"{key} is missing from {self.root}") from None
        except OSError as error:
            raise StorageError(f"cannot read {key} from {self.root}: {error.strerror}") from error
        if length is not None and len(data) != length:
            raise ObjectMissing(
                f"{key} is shorter than expected (truncated): wanted {length} bytes at {offset}"
            )
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            result = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, result.st_size, datetime.datetime.fromtimestamp(result.st_mtime, datetime.UTC))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Plain strings and os.stat, no pathlib: a backup lists index/ when it starts, and pathlib's parsing
        # cost more than the system calls.
        root = os.fspath(self.root)
        base = os.path.join(root, prefix.rstrip("/")) if prefix else root
        start = base if os.path.isdir(base) else os.path.dirname(base)
        if not os.path.isdir(start):
            return
        cut = len(root) + 1
        for directory, _, files in os.walk(start):
            folder = directory[cut:]
            for name in sorted(files):
                if name.endswith(TEMPORARY_SUFFIX):
                    continue
                key = f"{folder}/{name}" if folder else name
                if not key.startswith(prefix):
                    continue
                try:
                    result = os.stat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue  # deleted since the folder was read
                yield ObjectInfo(
                    key, result.st_size, datetime.datetime.fromtimestamp(result.st_mtime, datetime.UTC)
                )

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as error:
            raise StorageError(f"cannot delete {key} from {self.root}: {error.strerror}") from error

    def now(self) -> datetime.datetime:
        """The file server's clock, not this host's: the modification time of a probe file just written. On
        NFS several proxies share one repository with clocks of their own; leases, pending markers and pack
        times must all come from one clock (the one that stamps the packs' modification times)."""
        key = f".clock.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"
        probe = self._path(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, b"\0")  # a write: the server stamps the time (not an exclusive create)
            finally:
                os.close(descriptor)
            info = self.stat(key)  # the same reading as every object's time
        except OSError as error:
            raise StorageError(f"cannot read the clock of {self.root}: {error.strerror}") from error
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        if info is None:
            raise StorageError(f"cannot read the clock of {self.root}: the probe file vanished")
        return info.modified


class LocalObjectWriter:
    """Appends to a temporary file; commit() fsyncs and renames it into place (atomic, durable), abort() removes
    it. A crash leaves only a temporary file, which no reader ever lists as an object."""

    def __init__(self, storage: LocalStorage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.path = storage._path(key)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}")
            self.descriptor: int | None = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise StorageError(f"cannot write {key} to {storage.root}: {error.strerror}") from error
        self.size = 0

    def write(self, data: bytes) -> None:
        assert self.descriptor is not None
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.descriptor, view)
                view = view[written:]
        except OSError as error:
            raise StorageError(f"cannot write {self.key} to {self.storage.root}: {error.strerror}") from error
        self.size += len(data)

    def commit(self) -> None:
        assert self.descriptor is not None
        try:
            os.fsync(self.descriptor)
            os.close(self.descriptor)
            self.descriptor = None
            os.replace(self.temporary, self.path)
            self.storage._fsync_directory(self.path.parent)
        except OSError as error:
            raise StorageError(f"cannot write {self.key} to {self.storage.root}: {error.strerror}") from error

    def abort(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None
        with contextlib.suppress(OSError):
            self.temporary.unlink()
