"""A file's bytes out of an image point, read through its extents: only the stored blocks that hold the file are
fetched and decrypted (no mount, no full-image read), holes come back as zeros, nothing past the file's size."""

from __future__ import annotations

from collections.abc import Iterator

from catalog.choices import EntryKind
from catalog.files import BLOCK, tar_header
from catalog.models import FileVersion
from engine.image import ImageReader
from engine.repository import Repository as EngineRepository
from engine.repository import Snapshot

PIECE = 1024 * 1024


class NotReadable(Exception):
    """The version's data cannot be read by extents (a folder, a link, data inside the MFT record, btrfs)."""


def disk_of(snapshot: Snapshot, volume: str) -> dict[str, object]:
    key = volume.split(":", 1)[0]
    for disk in snapshot.disks:
        if str(disk["name"]) == key:
            return disk
    raise NotReadable(f"the point holds no disk {key}")


def readable(version: FileVersion) -> bool:
    """Whether the version's bytes can be had: every regular file (by extents, or through its file system)."""
    return version.kind in ("file", "hardlink")


def file_bytes(engine: EngineRepository, snapshot: Snapshot, version: FileVersion) -> Iterator[bytes]:
    """The file's content, in pieces of at most PIECE bytes: by its extents when the catalog has them, else read
    by the sandboxed walker through the file system (NTFS-resident data, btrfs, LVM)."""
    if version.kind not in ("file", "hardlink"):
        raise NotReadable(f"{version.path} is a {version.get_kind_display().lower()}, not a file")
    if not isinstance(version.extents, list):
        from catalog.indexer import WalkFailed, read_through_walker

        pieces = read_through_walker(
            engine,
            snapshot,
            disk_of(snapshot, version.volume),
            version.volume,
            str(version.path),
            version.size,
        )
        try:
            yield from pieces
        except WalkFailed as error:
            raise NotReadable(str(error)) from None
        return
    reader = ImageReader(engine, disk_of(snapshot, version.volume))
    position = 0
    for at, offset, length in sorted(version.extents or []):
        if at < position:  # overlapping runs (a damaged inode): the overlap is not read twice
            skip = position - at
            at, offset, length = at + skip, offset + skip, length - skip
        length = min(length, version.size - at)
        if length <= 0:
            continue
        while position < at:  # a hole: zeros, never read
            gap = min(PIECE, at - position)
            yield bytes(gap)
            position += gap
        done = 0
        while done < length:
            piece = reader.pread(min(PIECE, length - done), offset + done)
            if not piece:
                raise NotReadable(f"{version.path}: the stored disk ends before the file's data")
            yield piece
            done += len(piece)
        position += length
    while position < version.size:
        gap = min(PIECE, version.size - position)
        yield bytes(gap)
        position += gap


def _entry(version: FileVersion) -> dict[str, object]:
    """A catalogued version in the shape the tar writer of file points takes."""
    kind = {EntryKind.DIR: "dir", EntryKind.SYMLINK: "symlink"}.get(version.kind, "file")
    return {
        "type": kind,
        "mode": version.mode,
        "uid": version.uid or 0,
        "gid": version.gid or 0,
        "mtime_ns": version.mtime_ns or 0,
        "size": version.size,
        "target": version.link_target,
    }


def tar_of(
    engine: EngineRepository, snapshot: Snapshot, rows: list[tuple[str, FileVersion]]
) -> Iterator[bytes]:
    """A POSIX (PAX) tar of catalogued versions of an image point, given as (name in the archive, version) with
    folders before what they hold: files read by their extents, links kept as links (a hard link whose first name
    is in the archive points to it; otherwise the file's data is stored under this name)."""
    names: dict[str, str] = {}  # a path in the volume -> its name in this archive
    for name, version in rows:
        names[version.path.text] = name
        if version.kind == EntryKind.HARDLINK and version.link_target in names:
            yield tar_header(name, _entry(version), link_to=names[version.link_target])
            continue
        entry = _entry(version)
        yield tar_header(name, entry)
        if entry["type"] != "file":
            continue
        yield from file_bytes(engine, snapshot, version)
        if version.size % BLOCK:
            yield bytes(BLOCK - version.size % BLOCK)
    yield bytes(2 * BLOCK)
