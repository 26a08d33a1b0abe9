"""File backups: directory trees with content-defined chunks (FastCDC), and restores that cannot escape
their target.

A directory is one metadata chunk: canonical JSON of its entries sorted by name, so an unchanged directory
has the same id every time and is stored once. Files whose size, modification time and inode match the
parent snapshot reuse its chunk list without being read.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyfastcdc.cy import FastCDC

from engine.errors import UnsafePath
from engine.progress import NullProgress, Progress
from engine.repository import Repository, Snapshot, SnapshotWriter

# Content-defined chunk sizes (pyfastcdc's normalized chunking): small enough to deduplicate edits inside
# large files, large enough to keep the index at ~53 bytes per MiB.
MIN_CHUNK = 256 * 1024
AVERAGE_CHUNK = 1024 * 1024
MAX_CHUNK = 4 * 1024 * 1024
TREE_VERSION = 1


@dataclass
class FileStats:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    read_bytes: int = 0
    unchanged_files: int = 0
    skipped: int = 0


def check_name(name: str) -> str:
    """A directory entry's name must be one path component: never '', '.', '..', or contain '/' or NUL."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(f"refusing entry name {name!r}: not a single path component")
    return name


class FileTreeWriter(SnapshotWriter):
    """Backs up directory trees into one snapshot."""

    def __init__(self, repository: Repository, **options: Any) -> None:
        super().__init__(repository, **options)
        self.chunker = FastCDC(avg_size=AVERAGE_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
        self.stats = FileStats()
        self.errors: list[str] = []

    def _parent_tree(self, tree_id: str | None) -> dict[str, dict[str, Any]]:
        if tree_id is None:
            return {}
        tree = json.loads(self.repository.read_chunk(bytes.fromhex(tree_id)))
        return {entry["name"]: entry for entry in tree["entries"]}

    def _store_tree(self, entries: list[dict[str, Any]]) -> str:
        entries.sort(key=lambda entry: entry["name"])
        data = json.dumps(
            {"version": TREE_VERSION, "entries": entries}, sort_keys=True, separators=(",", ":")
        )
        return self.chunks.add(data.encode(), meta=True).hex()

    def _file_chunks(self, path: str, size: int) -> tuple[list[str], int]:
        """Chunk ids and the bytes they hold: a file that grows or shrinks while read records what was read."""
        if size == 0:
            return [], 0
        ids = []
        total = 0
        with open(path, "rb") as handle:
            data = handle.read(MAX_CHUNK * 4)
            carry = b""
            while data:
                buffer = carry + data
                pieces = list(self.chunker.cut_buf(buffer))
                more = handle.read(MAX_CHUNK * 4)
                # Keep the last piece back unless the file has ended: its cut point depends on what follows.
                final = not more
                for piece in pieces if final else pieces[:-1]:
                    ids.append(self.chunks.add(bytes(piece.data)).hex())
                    self.stats.read_bytes += piece.length
                    total += piece.length
                carry = b"" if final else bytes(pieces[-1].data)
                data = more
        self.progress.step(self.stats.read_bytes, None, "reading files")
        return ids, total

    def _directory(self, path: str, parent_tree: str | None) -> str:
        previous = self._parent_tree(parent_tree)
        entries: list[dict[str, Any]] = []
        try:
            listing = sorted(os.scandir(path), key=lambda item: item.name)
        except OSError as error:
            self.errors.append(f"{path}: {error.strerror}")
            self.stats.skipped += 1
            return self._store_tree([])
        for item in listing:
            try:
                info = item.stat(follow_symlinks=False)
            except OSError as error:
                self.errors.append(f"{item.path}: {error.strerror}")
                self.stats.skipped += 1
                continue
            entry: dict[str, Any] = {
                "name": item.name,
                "mode": stat.S_IMODE(info.st_mode),
                "uid": info.st_uid,
                "gid": info.st_gid,
                "mtime_ns": info.st_mtime_ns,
                "atime_ns": info.st_atime_ns,
            }
            old = previous.get(item.name)
            try:
                if stat.S_ISDIR(info.st_mode):
                    entry["type"] = "dir"
                    entry["tree"] = self._directory(
                        item.path, old.get("tree") if old and old.get("type") == "dir" else None
                    )
                    self.stats.directories += 1
                elif stat.S_ISREG(info.st_mode):
                    entry.update(type="file", size=info.st_size, inode=info.st_ino, ctime_ns=info.st_ctime_ns)
                    if info.st_nlink > 1:  # a hard link: restored as one again with its partners
                        entry.update(nlink=info.st_nlink, device=info.st_dev)
                    if (
                        old is not None
                        and old.get("type") == "file"
                        and (old["size"], old["mtime_ns"], old.get("inode"))
                        == (info.st_size, info.st_mtime_ns, info.st_ino)
                        # ctime too: an edit that puts size and mtime back (touch -r, some editors, tar -x)
                        # still changes it. Trees written before ctime was recorded compare without it.
                        and old.get("ctime_ns", info.st_ctime_ns) == info.st_ctime_ns
                    ):
                        entry["chunks"] = [
                            self.chunks.inherit(bytes.fromhex(chunk)).hex() for chunk in old["chunks"]
                        ]
                        self.stats.unchanged_files += 1
                    else:
                        entry["chunks"], entry["size"] = self._file_chunks(item.path, info.st_size)
                    self.stats.files += 1
                elif stat.S_ISLNK(info.st_mode):
                    entry.update(type="symlink", target=os.readlink(item.path))
                    self.stats.symlinks += 1
                else:
                    self.stats.skipped += 1  # sockets, devices, FIFOs: not data
                    continue
            except OSError as error:
                self.errors.append(f"{item.path}: {error.strerror}")
                self.stats.skipped += 1
                continue
            entries.append(entry)
        return self._store_tree(entries)

    def write(self, root: str | os.PathLike[str]) -> Snapshot:
        """Back up the tree under root and commit the snapshot."""
        return self.commit(self.store(root))

    def store(self, root: str | os.PathLike[str]) -> str:
        """Back up the tree under root without committing it yet; returns the id of its root tree. A root that
        is missing or not a folder is an error, never an empty "successful" snapshot."""
        path = os.fspath(root)
        if not os.path.isdir(path):
            reason = "it is not a folder" if os.path.lexists(path) else "it does not exist"
            raise NotADirectoryError(errno.ENOTDIR, f"nothing to back up: {reason}", path)
        return self._directory(path, self.parent.tree if self.parent else None)

    def commit(self, tree: str) -> Snapshot:
        """Write the manifest of a tree stored by store(): from now on the snapshot exists."""
        stats = self.stats
        if self.errors:
            shown = "; ".join(self.errors[:5]) + (
                f"; and {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
            )
            self.warnings.append(
                f"{len(self.errors)} item(s) could not be read and are not in the snapshot: {shown}"
            )
        return self._commit(
            "files",
            {
                "files": stats.files,
                "directories": stats.directories,
                "read_bytes": stats.read_bytes,
                "unchanged_files": stats.unchanged_files,
                "skipped": stats.skipped,
            },
            tree=tree,
        )


def read_tree(repository: Repository, tree_id: str) -> list[dict[str, Any]]:
    tree = json.loads(repository.read_chunk(bytes.fromhex(tree_id)))
    entries: list[dict[str, Any]] = tree["entries"]
    names = [check_name(entry["name"]) for entry in entries]
    if len(set(names)) != len(names):
        raise UnsafePath(f"tree {tree_id[:16]}… names one entry twice")
    return entries


def walk(
    repository: Repository, snapshot: Snapshot, prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, entry) for every entry of a file snapshot, depth first, paths relative to the root."""
    if snapshot.tree is None:
        raise ValueError(f"snapshot {snapshot.id} is not a file snapshot")
    stack = [(prefix, snapshot.tree)]
    while stack:
        base, tree_id = stack.pop()
        for entry in read_tree(repository, tree_id):
            path = f"{base}/{entry['name']}" if base else entry["name"]
            yield path, entry
            if entry["type"] == "dir":
                stack.append((path, entry["tree"]))


def read_file(repository: Repository, entry: dict[str, Any]) -> Iterator[bytes]:
    for chunk_id in entry.get("chunks", []):
        yield repository.read_chunk(bytes.fromhex(chunk_id))


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def restore_tree(
    repository: Repository,
    snapshot: Snapshot,
    target: str | os.PathLike[str],
    *,
    owners: bool | None = None,
    progress: Progress | None = None,
) -> FileStats:
    """Restore a file snapshot under target. Every entry is checked: a name is one component, a parent is a
    real directory (never a symlink), the result stays under target; symlinks are created last, so none can
    redirect a later write. Permissions and times are restored; owners too when running as root."""
    progress = progress or NullProgress()
    root = Path(target).resolve()
    root.mkdir(parents=True, exist_ok=True)
    owners = os.geteuid() == 0 if owners is None else owners
    stats = FileStats()
    directories: list[tuple[Path, dict[str, Any]]] = []
    symlinks: list[tuple[Path, dict[str, Any]]] = []
    done = 0
    linked: dict[tuple[int, int], Path] = {}  # (device, inode) at backup -> the path restored for it
    for relative, entry in walk(repository, snapshot):
        path = root / relative
        if not _inside(root, path):
            raise UnsafePath(f"{relative!r} would be written outside {root}")
        parent = path.parent
        if parent != root and (parent.is_symlink() or not parent.is_dir()):
            raise UnsafePath(f"{relative!r}: its parent is not a directory restored from this snapshot")
        if entry["type"] == "dir":
            if path.is_symlink():
                raise UnsafePath(f"{relative!r}: a symlink stands where a directory goes")
            path.mkdir(exist_ok=True)
            directories.append((path, entry))
            stats.directories += 1
        elif entry["type"] == "file":
            if path.is_symlink():
                raise UnsafePath(f"{relative!r}: a symlink stands where a file goes")
            link_key = (
                (entry["device"], entry["inode"]) if entry.get("nlink", 1) > 1 and "device" in entry else None
            )
            partner = linked.get(link_key) if link_key else None
            if partner is not None:
                # Another name of a file this restore wrote already: linked, not written twice.
                if path.exists():
                    path.unlink()
                os.link(partner, path, follow_symlinks=False)
                stats.files += 1
                continue
            # Written under a temporary name and renamed once complete (a failed restore leaves no partial
            # file under the real name); O_EXCL | O_NOFOLLOW: never written through anything standing there.
            partial = path.with_name(f".{path.name}.{os.urandom(6).hex()}.partial")
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    for data in read_file(repository, entry):
                        _write_sparse(handle, data)
                        done += len(data)
                        progress.step(done, None, "restoring files")
                    handle.truncate()  # the length, when the file ends in a hole
                    handle.flush()
                    # Through the open descriptor: the metadata lands on the file just written.
                    if owners:
                        _chown_descriptor(descriptor, entry)
                    os.fchmod(descriptor, entry["mode"])
                    os.utime(descriptor, ns=(entry["atime_ns"], entry["mtime_ns"]))
                os.replace(partial, path)
                if link_key:
                    linked[link_key] = path
            except BaseException:
                with contextlib.suppress(OSError):
                    partial.unlink()
                raise
            stats.files += 1
        elif entry["type"] == "symlink":
            symlinks.append((path, entry))
    for path, entry in symlinks:
        if path.exists() or path.is_symlink():
            path.unlink()
        os.symlink(entry["target"], path)
        if owners:
            _chown(path, entry, follow=False)
        os.utime(path, ns=(entry["atime_ns"], entry["mtime_ns"]), follow_symlinks=False)
        stats.symlinks += 1
    for path, entry in reversed(directories):  # deepest first: writing children changes a folder's times
        _apply_metadata(path, entry, owners)
    return stats


HOLE_SPAN = 64 * 1024
_ZEROS = bytes(HOLE_SPAN)


def _write_sparse(handle: Any, data: bytes) -> None:
    """Write data, seeking over whole runs of zeros instead: a sparse file restores sparse."""
    view = memoryview(data)
    for start in range(0, len(view), HOLE_SPAN):
        piece = view[start : start + HOLE_SPAN]
        if piece == _ZEROS[: len(piece)]:
            handle.seek(len(piece), os.SEEK_CUR)
        else:
            handle.write(piece)


def _chown(path: Path, entry: dict[str, Any], *, follow: bool) -> None:
    try:
        os.chown(path, entry["uid"], entry["gid"], follow_symlinks=follow)
    except OSError as error:
        if error.errno != errno.EPERM:
            raise


def _chown_descriptor(descriptor: int, entry: dict[str, Any]) -> None:
    try:
        os.fchown(descriptor, entry["uid"], entry["gid"])
    except OSError as error:
        if error.errno != errno.EPERM:
            raise


def _apply_metadata(path: Path, entry: dict[str, Any], owners: bool) -> None:
    """For directories (checked not to be symlinks when they were created)."""
    if path.is_symlink():
        raise UnsafePath(f"{path}: became a symlink during the restore")
    if owners:
        _chown(path, entry, follow=False)
    os.chmod(path, entry["mode"])
    os.utime(path, ns=(entry["atime_ns"], entry["mtime_ns"]))
