"""Files from file snapshots: browse a folder, and stream a selection as a tar archive (a browser download, or
what an agent unpacks to restore files on its host).

The archive is written as it is read, entry by entry and chunk by chunk, so its size never sits in memory. Every
name comes from tree entries already checked to be single path components; the agent checks them again.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import UnsafePath
from engine.files import check_name, read_file, read_tree
from engine.repository import Repository, Snapshot

BLOCK = tarfile.BLOCKSIZE


class NotFound(LookupError):
    """The path is not in the snapshot."""


def split(path: str) -> list[str]:
    """Path components of a snapshot path ('' or '/' is the root); each one checked."""
    parts = [part for part in path.strip().strip("/").split("/") if part]
    try:
        return [check_name(part) for part in parts]
    except UnsafePath as error:
        raise NotFound(str(error)) from None


def lookup(repository: Repository, snapshot: Snapshot, path: str) -> dict[str, Any]:
    """The entry at path; the root is a synthetic directory entry."""
    if snapshot.tree is None:
        raise NotFound("this recovery point holds disk images, not files")
    entry: dict[str, Any] = {"name": "", "type": "dir", "tree": snapshot.tree}
    for part in split(path):
        if entry["type"] != "dir":
            raise NotFound(f"{path}: {entry['name']} is not a folder")
        found = next((e for e in read_tree(repository, entry["tree"]) if e["name"] == part), None)
        if found is None:
            raise NotFound(f"{path} is not in this recovery point")
        entry = found
    return entry


def file_pieces(repository: Repository, snapshot: Snapshot, path: str) -> Iterator[bytes]:
    """One regular file's content out of a file snapshot, chunk by chunk."""
    entry = lookup(repository, snapshot, path)
    if entry["type"] != "file":
        raise NotFound(f"{path} is not a regular file")
    return read_file(repository, entry)


def checked_paths(repository: Repository, snapshot: Snapshot, paths: list[str]) -> list[str]:
    """The chosen paths in their plain form ("a/b"), each checked to be in the snapshot (NotFound if not)."""
    cleaned = ["/".join(split(path)) for path in paths]
    for path in cleaned:
        lookup(repository, snapshot, path)
    return cleaned


def list_folder(repository: Repository, snapshot: Snapshot, path: str) -> list[dict[str, Any]]:
    entry = lookup(repository, snapshot, path)
    if entry["type"] != "dir":
        raise NotFound(f"{path} is not a folder")
    entries = read_tree(repository, entry["tree"])
    return sorted(entries, key=lambda e: (e["type"] != "dir", e["name"].lower()))


@dataclass
class Selection:
    files: int = 0
    folders: int = 0
    bytes: int = 0


def walk_selection(
    repository: Repository, snapshot: Snapshot, paths: list[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(relative path, entry) for every chosen path and everything under the chosen folders; parents first.
    No paths means the whole snapshot."""
    roots = [p for p in paths if p.strip("/")] or [""]
    seen: set[str] = set()
    for root in roots:
        parts = split(root)
        base = "/".join(parts)
        entry = lookup(repository, snapshot, base)
        stack: list[tuple[str, dict[str, Any]]] = [(base, entry)]
        while stack:
            relative, current = stack.pop()
            if relative in seen:
                continue
            seen.add(relative)
            if relative:
                yield relative, current
            if current["type"] == "dir":
                children = read_tree(repository, current["tree"])
                for child in reversed(children):
                    stack.append((f"{relative}/{child['name']}" if relative else child["name"], child))


def measure(repository: Repository, snapshot: Snapshot, paths: list[str]) -> Selection:
    selection = Selection()
    for _, entry in walk_selection(repository, snapshot, paths):
        if entry["type"] == "file":
            selection.files += 1
            selection.bytes += int(entry.get("size") or 0)
        elif entry["type"] == "dir":
            selection.folders += 1
    return selection


def tar_header(relative: str, entry: dict[str, Any], link_to: str | None = None) -> bytes:
    info = tarfile.TarInfo(relative)
    info.mode = int(entry.get("mode", 0o644)) & 0o7777
    info.uid = int(entry.get("uid", 0))
    info.gid = int(entry.get("gid", 0))
    info.mtime = int(entry.get("mtime_ns", 0)) / 1e9
    if entry["type"] == "dir":
        info.type = tarfile.DIRTYPE
    elif entry["type"] == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = str(entry["target"])
    elif link_to is not None:  # another name of a file earlier in this archive
        info.type = tarfile.LNKTYPE
        info.linkname = link_to
    else:
        info.type = tarfile.REGTYPE
        info.size = int(entry.get("size") or 0)
    # PAX keeps long names, large sizes and sub-second times exactly.
    info.pax_headers = {"mtime": f"{int(entry.get('mtime_ns', 0)) / 1e9:.9f}"}
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def _link_key(entry: dict[str, Any]) -> tuple[int, int] | None:
    """A file with more than one link records its device and inode: its names are one file again."""
    if entry.get("type") != "file" or int(entry.get("nlink") or 1) < 2 or "device" not in entry:
        return None
    return int(entry["device"]), int(entry["inode"])


def tar_stream(
    repository: Repository, snapshot: Snapshot, paths: list[str], *, on_bytes: Any = None
) -> Iterator[bytes]:
    """A POSIX (PAX) tar of the selection, produced piece by piece. A file whose chunks cannot be read ends
    the stream with an error rather than with wrong bytes."""
    done = 0
    linked: dict[tuple[int, int], str] = {}  # (device, inode) of a hard-linked file -> its first name here
    for relative, entry in walk_selection(repository, snapshot, paths):
        link_key = _link_key(entry)
        if link_key in linked:
            yield tar_header(relative, entry, link_to=linked[link_key])  # a hard link: no data again
            continue
        yield tar_header(relative, entry)
        if entry["type"] != "file":
            continue
        if link_key is not None:
            linked[link_key] = relative
        size = int(entry.get("size") or 0)
        written = 0
        for data in read_file(repository, entry):
            written += len(data)
            if written > size:
                raise ValueError(f"{relative}: its chunks hold more bytes than its recorded size")
            yield data
            done += len(data)
            if on_bytes is not None:
                on_bytes(done)
        if written != size:
            raise ValueError(f"{relative}: its chunks hold {written} bytes, its size is {size}")
        if size % BLOCK:
            yield bytes(BLOCK - size % BLOCK)
    yield bytes(2 * BLOCK)
