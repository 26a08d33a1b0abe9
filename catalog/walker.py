"""The catalog walker: partitions, volumes and file systems of a disk image, file by file, with dissect.

It parses untrusted bytes (a guest's disk), so it runs in a child process (`python -m catalog.walker`) with memory,
CPU, file and time limits, and holds nothing worth stealing: no repository key, no database, no credential. It asks
its parent for disk bytes over a pipe, and tells it what it found:

    parent → child   one JSON line: {"disks": [{"key": ..., "size": ...}, ...], "plans": {disk: {volume: plan}}}
    child → parent   "R <disk> <offset> <length>\\n"  a read; the parent answers with a 4-byte length and the bytes
                     "V <json>\\n"                    a volume: where it is, its file system, or why it was skipped
                     "E <json>\\n"                    a batch of entries (files, folders, links)
                     "L <json>\\n"                    a batch of folder listings (names, inodes, what was read)
                     "D\\n"                           done

An entry: volume id `v`, path `p`, type `t` (file, dir, symlink, hardlink, other), size `s`, mode `m`, owner `u`/`g`,
times `mt`/`ct`/`at` (ns), link target `lt`, inode `i`, and where its data lives `x`: extents as absolute disk
offsets [[file offset, disk offset, length], ...] (sparse holes left out), "resident" (NTFS data inside the MFT record), or null
when unknown (btrfs, LVM); on ext and XFS also its dependencies `d` (the disk ranges describing it read) and `h` (their
digest). A listing: volume `v`, folder `p`, inode `i`, its entries `c` ([name, inode], ...), and its own `d`/`h`.
A plan (the incremental catalog, see `walk_planned`) names what to read again; the rest did not change.

This module imports no Django and nothing of Bulwark, so a parser fault cannot reach the console's state.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

# The child reads the disk in pages of the repository's block size: a directory or inode block read costs one
# stored block, not a larger span (measured: 256 KiB pages read 106 MiB of a 256 MiB image to walk 22,700 files).
PAGE = 64 * 1024
CACHE_PAGES = 1024  # 64 MiB of disk pages kept by the child
BATCH = 500
MAX_DEPTH = 256
ERRORS_KEPT = 20
LENGTH = struct.Struct("!I")
FAILED_READ = 0xFFFFFFFF

Read = Callable[[int, int], bytes]


# --- the disk, as the child sees it --------------------------------------------------------------------------------
class _Seekable:
    """A read-only file's position: `size` and `position` kept by the subclass."""

    size: int
    position: int

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class RemoteDisk(_Seekable):
    """A read-only, seekable file over `read(offset, length)`, with a page cache (dissect reads in small pieces)."""

    def __init__(self, read: Read, size: int) -> None:
        self._read = read
        self.size = size
        self.position = 0
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_read = 0
        # Dependency tracing (the incremental catalog): while on, every read is recorded as a range of the disk
        # and its bytes hashed, except reads inside `untracked` (tables whose meaning the volume's geometry holds).
        self._trace: list[list[int]] | None = None
        self._hash: Any = None
        self.untracked: list[tuple[int, int]] = []

    def _page(self, number: int) -> bytes:
        page = self._pages.get(number)
        if page is None:
            start = number * PAGE
            page = self._read(start, min(PAGE, self.size - start))
            self.bytes_read += len(page)
            self._pages[number] = page
            if len(self._pages) > CACHE_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(number)
        return page

    def read(self, length: int = -1) -> bytes:
        if length is None or length < 0:
            length = self.size - self.position
        data = self.read_at(self.position, length)
        self.position += len(data)
        return data

    def read_at(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` (fewer at the end of the disk); the position is not moved."""
        length = max(0, min(length, self.size - offset))
        number, within = divmod(offset, PAGE)
        if within + length <= PAGE:  # the common case: inside one page
            page = self._pages.get(number)
            if page is None:
                page = self._page(number)
            data = page[within : within + length]
        else:
            parts = []
            position, left = offset, length
            while left > 0:
                number, within = divmod(position, PAGE)
                piece = self._page(number)[within : within + left]
                if not piece:
                    break
                parts.append(piece)
                position += len(piece)
                left -= len(piece)
            data = b"".join(parts)
        if self._trace is not None and data:
            self._traced(offset, data)
        return data

    def _traced(self, start: int, data: bytes) -> None:
        end = start + len(data)
        for low, high in self.untracked:
            if low <= start and end <= high:
                return
        last = self._trace[-1] if self._trace else None
        if last is not None and last[0] + last[1] == start:
            last[1] += len(data)
        else:
            self._trace.append([start, len(data)])  # type: ignore[union-attr]
        self._hash.update(data)

    def begin(self) -> None:
        """Start recording what is read: the dependencies of one entry or one folder's listing."""
        self._trace, self._hash = [], hashlib.blake2b(digest_size=16)

    def end(self) -> tuple[list[list[int]], str]:
        """The ranges read since `begin` (in order, adjacent ones joined) and the digest of their bytes."""
        ranges, digest = self._trace or [], self._hash.hexdigest() if self._hash else ""
        self._trace, self._hash = None, None
        return ranges, digest


class Window(_Seekable):
    """A part of the disk as a file, unbuffered: dissect's RangeStream keeps a buffer of its own, which would
    hide reads from the dependency tracing (the disk's page cache already makes small reads cheap)."""

    def __init__(self, disk: Any, offset: int, size: int) -> None:
        self.disk, self.offset, self.size, self.position = disk, offset, size, 0

    def read(self, length: int = -1) -> bytes:
        left = self.size - self.position
        length = left if length is None or length < 0 else max(0, min(length, left))
        if length <= 0:
            return b""
        data: bytes = self.disk.read_at(self.offset + self.position, length)
        self.position += len(data)
        return data

    def read_at(self, offset: int, length: int) -> bytes:
        data: bytes = self.disk.read_at(self.offset + offset, max(0, min(length, self.size - offset)))
        return data


# --- volumes ---------------------------------------------------------------------------------------------------------
@dataclass
class Volume:
    id: str  # "<disk>" for a whole disk, "<disk>:p<n>" for a partition, "<disk>:lvm:<vg>/<lv>"
    offset: int | None  # where it starts on the disk (None: not a plain range, e.g. an LVM volume)
    size: int
    stream: BinaryIO
    label: str = ""
    filesystem: str = ""
    state: str = "complete"  # complete | partial | skipped
    reason: str = ""
    files: int = 0
    errors: list[str] = field(default_factory=list)
    # The incremental catalog: what the next walk compares (see `geometry`), each folder's listing with what it
    # read, and whether this walk reused the previous one (with why not when it could not).
    geometry: str = ""
    fixed: list[list[int]] = field(default_factory=list)
    listings: list[dict[str, Any]] = field(default_factory=list)
    incremental: bool = False
    full_walk_reason: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "geometry": self.geometry,
            "fixed": self.fixed,
            "incremental": self.incremental,
            "full_walk_reason": self.full_walk_reason,
            "id": self.id,
            "offset": self.offset,
            "size": self.size,
            "label": self.label,
            "filesystem": self.filesystem,
            "state": self.state,
            "reason": self.reason,
            "files": self.files,
            "errors": self.errors[:ERRORS_KEPT],
            "error_count": len(self.errors),
        }


LVM_TYPES = {0x8E, "e6d6d379-f507-44c2-a23c-238f2a3df928"}


def volumes_of(key: str, disk: BinaryIO, size: int) -> Iterator[Volume]:
    """The volumes on a disk: its partitions (MBR, GPT; LVM2 physical volumes opened into logical volumes), or
    the whole disk when it has no partition table."""
    from dissect.volume.disk import Disk

    try:
        disk.seek(0)
        table = Disk(disk)
        partitions = [p for p in table.partitions if p.size > 0 and p.type not in (0x05, 0x0F, 0x85, 0xEE)]
    except MemoryError:
        raise  # the memory limit: the walk stops, it does not go on with less
    except Exception:
        partitions = []
    if not partitions:
        yield Volume(key, 0, size, Window(disk, 0, size))  # type: ignore[arg-type]
        return
    for partition in partitions:
        volume_id = f"{key}:p{partition.number}"
        if partition.offset + partition.size > size:
            yield Volume(
                volume_id,
                partition.offset,
                partition.size,
                Window(disk, 0, 0),  # type: ignore[arg-type]
                label=partition.name or "",
                state="skipped",
                reason=f"the partition ends past the end of the disk ({partition.offset + partition.size} > {size})",
            )
            continue
        stream: BinaryIO = Window(disk, partition.offset, partition.size)  # type: ignore[assignment]
        kind = str(partition.type).lower() if not isinstance(partition.type, int) else partition.type
        if kind in LVM_TYPES or _is_lvm(stream):
            yield from _logical_volumes(volume_id, partition, stream)
            continue
        yield Volume(volume_id, partition.offset, partition.size, stream, label=partition.name or "")


def _is_lvm(stream: BinaryIO) -> bool:
    stream.seek(512)
    return stream.read(8) == b"LABELONE"


def _logical_volumes(volume_id: str, partition: Any, stream: BinaryIO) -> Iterator[Volume]:
    from dissect.volume.lvm import LVM2

    try:
        lvm = LVM2(stream)
        logical = list(lvm.volume_group.logical_volumes)
    except MemoryError:
        raise  # the memory limit: the walk stops, it does not go on with less
    except Exception as error:
        yield Volume(
            volume_id,
            partition.offset,
            partition.size,
            stream,
            filesystem="lvm2",
            state="skipped",
            reason=f"the LVM2 metadata cannot be read: {error}",
        )
        return
    for lv in logical:
        try:
            lv_stream = lv.open()
            lv_size = int(getattr(lv, "size", 0) or 0)
        except MemoryError:
            raise  # the memory limit: the walk stops, it does not go on with less
        except Exception as error:
            yield Volume(
                f"{volume_id}:lvm:{lv.name}", None, 0, stream, state="skipped", reason=f"cannot open: {error}"
            )
            continue
        yield Volume(
            f"{volume_id}:lvm:{lvm.volume_group.name}/{lv.name}", None, lv_size, lv_stream, label=lv.name
        )


# --- file systems ----------------------------------------------------------------------------------------------------
def detect(stream: BinaryIO) -> str:
    """The file system (or encryption) a volume holds, by its signature; "" when none is known."""
    stream.seek(0)
    head = stream.read(4096)
    stream.seek(0x10000)
    btrfs = stream.read(0x48)
    if head[:6] == b"LUKS\xba\xbe":
        return "luks"
    if head[3:11] == b"-FVE-FS-":
        return "bitlocker"
    if head[3:11] == b"NTFS    ":
        return "ntfs"
    if head[:4] == b"XFSB":
        return "xfs"
    if len(head) >= 0x43A and head[0x438:0x43A] == b"\x53\xef":
        return "ext"
    if btrfs[0x40:0x48] == b"_BHRfS_M":
        return "btrfs"
    if head[3:8] == b"EXFAT":
        return "exfat"
    if head[510:512] == b"\x55\xaa" and (
        head[54:59] == b"FAT12" or head[54:59] == b"FAT16" or head[82:87] == b"FAT32"
    ):
        return "fat"
    return ""


REASONS = {
    "luks": "encrypted with LUKS; no key is held for it",
    "bitlocker": "encrypted with BitLocker; no recovery key is held for it",
    "exfat": "exFAT is not readable by this version's parsers",
}


@dataclass
class Entry:
    path: str
    type: str  # file | dir | symlink | other
    size: int = 0
    mode: int = 0
    uid: int | None = None
    gid: int | None = None
    mtime: int | None = None
    ctime: int | None = None
    atime: int | None = None
    link: str = ""
    inode: int | None = None
    links: int = 1
    extents: list[list[int]] | str | None = None
    deps: tuple[list[list[int]], str] | None = (
        None  # what describing it read: ranges of the disk, their digest
    )


def _type_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _runs(runs: Any, unit: int, base: int | None, size: int) -> list[list[int]] | None:
    """Data runs (first block, count) in file-system units as extents [file offset, disk offset, length]:
    absolute on the disk, sparse runs left out (a restore leaves them as holes), cut at the file's size."""
    if base is None:
        return None
    if callable(runs):
        runs = runs()
    extents: list[list[int]] = []
    position = 0
    for start, count in runs:
        if position >= size:
            break
        length = min(count * unit, size - position)
        if start is not None and length > 0:
            offset = base + start * unit
            last = extents[-1] if extents else None
            if last and last[0] + last[2] == position and last[1] + last[2] == offset:
                last[2] += length
            else:
                extents.append([position, offset, length])
        position += count * unit
    return extents


@dataclass
class Tree:
    """How to walk one file system: a folder's identity (loops), its listing, an entry's description, an
    entry's inode number (None: the file system has none, and cannot be walked incrementally)."""

    identity: Callable[[Any], Any]
    children: Callable[[Any], Iterable[tuple[str, Any]]]
    describe: Callable[[Any, str], Entry | None]
    number: Callable[[Any], int | None] = lambda node: None


def walk_tree(
    root: Any,
    tree: Tree,
    volume: Volume,
    *,
    disk: RemoteDisk | None = None,
    base: str = "",
    depth: int = 0,
) -> Iterator[Entry]:
    """Depth-first over a file system's folders, the same for every file system: a folder seen twice is a loop
    (reported, not followed), a folder deeper than MAX_DEPTH is not entered, and an unreadable folder or entry is
    reported and skipped, never fatal. With `disk`, what each listing and each entry read is recorded (their
    dependencies, for the next walk to compare)."""
    seen: set[Any] = set()
    stack: list[tuple[Any, str, int]] = [(root, base, depth)]
    while stack:
        node, path, level = stack.pop()
        key = tree.identity(node)
        if key is not None and key in seen:
            volume.errors.append(f"{path or '/'}: a directory loop ({key} again); not followed")
            continue
        seen.add(key)
        listing = _list(node, path, tree, volume, disk)
        if listing is None:
            continue
        for name, child in listing:
            entry = _describe(child, f"{path}/{name}", tree, volume, disk)
            if entry is None:
                continue
            yield entry
            if entry.type == "dir":
                if level + 1 >= MAX_DEPTH:
                    volume.errors.append(f"{entry.path}: deeper than {MAX_DEPTH} levels; not followed")
                else:
                    stack.append((child, entry.path, level + 1))


def _list(
    node: Any, path: str, tree: Tree, volume: Volume, disk: RemoteDisk | None
) -> list[tuple[str, Any]] | None:
    """A folder's entries (without "." and ".."), its listing recorded when tracing; None when unreadable."""
    if disk is not None:
        disk.begin()
    try:
        listing = [(name, child) for name, child in tree.children(node) if name and name not in (".", "..")]
    except MemoryError:
        raise  # the memory limit: the walk stops, it does not go on with less
    except Exception as error:
        volume.errors.append(f"{path or '/'}: cannot list: {error}")
        return None
    finally:
        ranges, digest = disk.end() if disk is not None else ([], "")
    if disk is not None:
        volume.listings.append(
            {
                "p": path or "/",
                "i": tree.number(node),
                "d": ranges,
                "h": digest,
                "c": [[name, tree.number(child)] for name, child in listing],
            }
        )
    return listing


def _describe(child: Any, full: str, tree: Tree, volume: Volume, disk: RemoteDisk | None) -> Entry | None:
    if disk is not None:
        disk.begin()
    try:
        entry = tree.describe(child, full)
    except MemoryError:
        raise  # the memory limit: the walk stops, it does not go on with less
    except Exception as error:
        volume.errors.append(f"{full}: {error}")
        return None
    finally:
        deps = disk.end() if disk is not None else None
    if entry is not None:
        entry.deps = deps
    return entry


def unix_tree(unit: int, volume: Volume) -> Tree:
    """ext2/3/4 and XFS: inodes with modes, owners and data runs in blocks."""

    def describe(child: Any, full: str) -> Entry:
        inode = child.inode
        mode = int(inode.di_mode if hasattr(inode, "di_mode") else inode.i_mode)
        kind = _type_of(mode)
        entry = Entry(
            full,
            kind,
            size=int(child.size),
            mode=stat.S_IMODE(mode),
            uid=int(getattr(inode, "di_uid", getattr(inode, "i_uid", 0))),
            gid=int(getattr(inode, "di_gid", getattr(inode, "i_gid", 0))),
            mtime=int(child.mtime_ns),
            ctime=int(child.ctime_ns),
            atime=int(child.atime_ns),
            inode=int(child.inum),
            links=int(getattr(inode, "di_nlink", getattr(inode, "i_links_count", 1)) or 1),
        )
        if kind == "symlink":
            entry.link = str(child.link)
        elif kind == "file":
            entry.extents = _runs(child.dataruns, unit, volume.offset, entry.size)
            _check_extents(entry, volume)
        return entry

    def children(node: Any) -> Iterator[tuple[str, Any]]:
        for child in node.iterdir():
            yield (child.name if hasattr(child, "name") else child.filename), child

    return Tree(lambda node: f"inode {node.inum}", children, describe, lambda node: int(node.inum))


def _check_extents(entry: Entry, volume: Volume) -> None:
    """Extents that point outside the volume are a damaged (or crafted) inode: the file is listed, its data not."""
    if not isinstance(entry.extents, list) or volume.offset is None:
        return
    end = volume.offset + volume.size
    if any(offset < volume.offset or offset + length > end for _, offset, length in entry.extents):
        volume.errors.append(f"{entry.path}: its data runs point outside the volume; listed without its data")
        entry.extents = None


def ntfs_tree(fs: Any, volume: Volume) -> Tree:
    def describe(index_entry: Any, full: str) -> Entry | None:
        if full.count("/") == 1 and full[1:].startswith("$"):
            return None  # the file system's own metadata files
        child = index_entry.dereference()
        info = child.attributes[0x10][0] if 0x10 in child.attributes else None
        is_dir = child.is_dir()
        kind = "dir" if is_dir else "symlink" if child.is_symlink() else "file"
        entry = Entry(
            full,
            kind,
            size=0 if is_dir else int(child.size()),
            mode=0o755 if is_dir else 0o644,
            mtime=_ns(info.last_modification_time) if info else None,
            ctime=_ns(info.creation_time) if info else None,
            atime=_ns(info.last_access_time) if info else None,
            inode=int(child.segment),
        )
        if kind == "symlink":
            entry.link = str(child.reparse_point_substitute_name or "")
        elif kind == "file":
            if child.resident:
                entry.extents = "resident"
            else:
                entry.extents = _runs(child.dataruns, fs.cluster_size, volume.offset, entry.size)
                _check_extents(entry, volume)
        return entry

    def record(node: Any) -> Any:
        """The MFT record of a folder: the root is one, the others are index entries that name theirs."""
        return node.dereference() if hasattr(node, "dereference") else node

    return Tree(
        lambda node: f"record {record(node).segment}", lambda node: record(node).listdir().items(), describe
    )


def fat_tree(fs: Any, volume: Volume) -> Tree:
    base = None if volume.offset is None else volume.offset + fs.first_data_sector * fs.sector_size

    def describe(child: Any, full: str) -> Entry | None:
        if child.is_volume_id():
            return None
        is_dir = child.is_directory()
        entry = Entry(
            full,
            "dir" if is_dir else "file",
            size=0 if is_dir else int(child.size),
            mode=0o755 if is_dir else (0o444 if child.is_readonly() else 0o644),
            mtime=_ns(child.mtime),
            ctime=_ns(child.ctime),
            atime=_ns(child.atime),
        )
        if not is_dir:
            entry.extents = _runs(child.dataruns, fs.cluster_size, base, entry.size)
            _check_extents(entry, volume)
        return entry

    def identity(node: Any) -> Any:
        cluster = int(getattr(node, "cluster", 0) or 0)
        return f"cluster {cluster}" if cluster else None

    return Tree(identity, lambda node: ((c.name, c) for c in node.iterdir()), describe)


def btrfs_tree(fs: Any, volume: Volume) -> Tree:
    """btrfs (the default subvolume): data lives behind the chunk tree, so extents are not recorded."""

    def describe(child: Any, full: str) -> Entry:
        mode = int(child.mode)
        kind = _type_of(mode)
        entry = Entry(
            full,
            kind,
            size=int(child.size) if kind != "dir" else 0,
            mode=stat.S_IMODE(mode),
            uid=int(child.uid),
            gid=int(child.gid),
            mtime=int(child.mtime_ns),
            ctime=int(child.ctime_ns),
            atime=int(child.atime_ns),
            inode=int(child.inum),
            links=int(getattr(child.inode, "nlink", 1) or 1),
        )
        if kind == "symlink":
            entry.link = str(child.link)
        return entry

    return Tree(lambda node: f"inode {node.inum}", lambda node: node.listdir().items(), describe)


def _ns(moment: Any) -> int | None:
    if moment is None:
        return None
    try:
        return int(moment.timestamp() * 1_000_000_000)
    except (AttributeError, OverflowError, OSError, ValueError):
        return None


def entries_of(
    volume: Volume, disk: RemoteDisk | None = None, plan: dict[str, Any] | None = None
) -> Iterator[Entry]:
    """Open the volume's file system and walk it; the volume says what it was and what went wrong.

    ext2/3/4 and XFS are walked with their dependencies recorded (`disk`), so that the next point's catalog can
    reuse what did not change: with a `plan` from the parent (the previous walk's folders and what to read again)
    only the listed folders and entries are read, when the file system's geometry is still the same."""
    kind = detect(volume.stream)
    volume.filesystem = kind
    if kind in REASONS:
        volume.state, volume.reason = "skipped", REASONS[kind]
        return
    if not kind:
        volume.state, volume.reason = "skipped", "no known file system (empty, swap, or unformatted)"
        return
    try:
        fs = open_filesystem(kind, volume.stream)
        root, tree = _tree_of(kind, fs, volume)
        traced = (
            disk if disk is not None and volume.offset is not None and _prepare(kind, fs, volume) else None
        )
        if traced is not None:
            traced.untracked = [(offset, offset + length) for offset, length in volume.fixed]
    except MemoryError:
        raise  # the memory limit: the walk stops, it does not go on with less
    except Exception as error:
        volume.state, volume.reason = "skipped", f"the {kind} file system cannot be opened: {error}"
        return
    if plan is not None and traced is None:
        volume.full_walk_reason = "the file system cannot be walked incrementally"
    elif plan is not None and plan.get("geometry") != volume.geometry:
        volume.full_walk_reason = "the file system's layout changed"
    walker: Iterator[Entry]
    if plan is not None and traced is not None and not volume.full_walk_reason:
        volume.incremental = True
        walker = walk_planned(fs, root, tree, volume, traced, plan)
    else:
        walker = walk_tree(root, tree, volume, disk=traced)
    for entry in walker:
        volume.files += 1
        yield entry
    if volume.errors:
        volume.state = "partial"
        volume.reason = f"{len(volume.errors)} item(s) could not be read"


def _tree_of(kind: str, fs: Any, volume: Volume) -> tuple[Any, Tree]:
    if kind in ("ext", "xfs"):
        return fs.root, unix_tree(fs.block_size, volume)
    if kind == "ntfs":
        return fs.mft.root, ntfs_tree(fs, volume)
    if kind == "fat":
        return fs.root, fat_tree(fs, volume)
    return fs.default_subvolume.root, btrfs_tree(fs, volume)


MAX_GROUPS = 1 << 20  # more block or allocation groups than any real volume: not walked incrementally


def _prepare(kind: str, fs: Any, volume: Volume) -> bool:
    """Make a file system walkable incrementally: its geometry (what every entry's place depends on and no
    entry's dependencies say: block size, inode size, the inode tables' places), the tables that hold it (their
    reads are not dependencies: free counts change there on every write), and no buffer that would hide reads.
    False for file systems this is not done for (NTFS, FAT, btrfs: they are walked whole every time)."""
    assert volume.offset is not None
    if kind == "ext":
        if not 0 < fs.groups_count <= MAX_GROUPS:
            return False
        wide = fs._group_desc_struct.__name__ == "ext4_group_desc"
        tables = []
        for number in range(fs.groups_count):
            group = fs._read_group_desc(number)
            tables.append(
                (group.bg_inode_table_hi << 32 | group.bg_inode_table_lo) if wide else group.bg_inode_table_lo
            )
        sb = fs.sb
        places = hashlib.blake2b(json.dumps(tables).encode(), digest_size=16).hexdigest()
        shape = [
            "ext",
            fs.block_size,
            sb.s_inode_size,
            sb.s_inodes_per_group,
            sb.s_inodes_count,
            fs.groups_count,
        ]
        volume.geometry = json.dumps([*shape, fs._dirtype.__name__, places])
        volume.fixed = [
            [volume.offset + 1024, 1024],
            [volume.offset + fs.groups_offset, fs.groups_count * fs._group_desc_size],
        ]
        return True
    if kind == "xfs":
        from dissect.xfs.xfs import AllocationGroup

        sb = fs.sb
        if not 0 < sb.sb_agcount <= MAX_GROUPS:
            return False
        for number in range(1, sb.sb_agcount):  # each group over an unbuffered window, not a RangeStream
            fs.ag[number] = AllocationGroup(fs, Window(fs.fh, number * fs._ag_size, fs._ag_size), number)
        shape = [
            sb.sb_blocksize,
            sb.sb_agblocks,
            sb.sb_agcount,
            sb.sb_inodesize,
            sb.sb_inopblock,
            sb.sb_sectsize,
        ]
        volume.geometry = json.dumps(["xfs", *shape, sb.sb_rootino, fs._has_ftype, fs.version])
        volume.fixed = [[volume.offset + n * fs._ag_size, 4 * sb.sb_sectsize] for n in range(sb.sb_agcount)]
        return True
    return False


def walk_planned(
    fs: Any, root: Any, tree: Tree, volume: Volume, disk: RemoteDisk, plan: dict[str, Any]
) -> Iterator[Entry]:
    """The changed part of a volume, by the parent's plan: entries to describe again (their folder's listing did
    not change) and folders to list again (with the entries of theirs that did not change, which are not
    described again); a folder not known before at its path is walked whole. The parent puts the rest together
    from the previous walk."""
    known: dict[str, int] = {str(path): int(number) for path, number in plan.get("dirs", {}).items()}

    def node(number: int, path: str) -> Any:
        return root if path == "/" else fs.get_inode(int(number), path.rsplit("/", 1)[-1])

    def follow(entry: Entry, child: Any) -> Iterator[Entry]:
        if entry.type == "dir" and known.get(entry.path) != entry.inode:
            level = entry.path.count("/")
            if level >= MAX_DEPTH:
                volume.errors.append(f"{entry.path}: deeper than {MAX_DEPTH} levels; not followed")
            else:
                yield from walk_tree(child, tree, volume, disk=disk, base=entry.path, depth=level)

    for path, number in plan.get("describe", []):
        try:
            child = node(number, path)
        except MemoryError:
            raise  # the memory limit: the walk stops, it does not go on with less
        except Exception as error:
            volume.errors.append(f"{path}: {error}")
            continue
        entry = _describe(child, path, tree, volume, disk)
        if entry is not None:
            yield entry
            yield from follow(entry, child)
    for path, number, unchanged in plan.get("lists", []):
        if path != "/" and path.count("/") >= MAX_DEPTH:
            continue
        keep = {(str(name), int(child_number)) for name, child_number in unchanged}
        try:
            folder = node(number, path)
        except MemoryError:
            raise  # the memory limit: the walk stops, it does not go on with less
        except Exception as error:
            volume.errors.append(f"{path}: cannot list: {error}")
            continue
        listing = _list(folder, "" if path == "/" else path, tree, volume, disk)
        for name, child in listing or []:
            if (name, tree.number(child)) in keep:
                continue
            entry = _describe(child, f"{'' if path == '/' else path}/{name}", tree, volume, disk)
            if entry is not None:
                yield entry
                yield from follow(entry, child)


def walk_disk(
    key: str, read: Read, size: int, plans: dict[str, Any] | None = None
) -> Iterator[tuple[str, Any]]:
    """("volume", record), ("entry", Entry) and ("listing", dict) for one disk, volumes in order."""
    disk = RemoteDisk(read, size)
    for volume in volumes_of(key, disk, size):  # type: ignore[arg-type]
        if volume.state != "skipped":
            for entry in entries_of(volume, disk, (plans or {}).get(volume.id)):
                yield "entry", (volume.id, entry)
                while volume.listings:
                    yield "listing", (volume.id, volume.listings.pop(0))
            while volume.listings:
                yield "listing", (volume.id, volume.listings.pop(0))
        disk.untracked = []
        yield "volume", volume.record()


def open_filesystem(kind: str, stream: BinaryIO) -> Any:
    """The dissect parser for a file system `detect` named, over the volume's stream."""
    stream.seek(0)
    if kind == "ext":
        from dissect.extfs import ExtFS

        return ExtFS(stream)
    if kind == "xfs":
        from dissect.xfs import XFS

        return XFS(stream)
    if kind == "ntfs":
        from dissect.ntfs import NTFS

        return NTFS(stream)
    if kind == "fat":
        from dissect.fat import FATFS

        return FATFS(stream)
    if kind == "btrfs":
        from dissect.btrfs import Btrfs

        return Btrfs(stream)
    raise OSError(REASONS.get(kind, "no known file system"))


def open_file(volume: Volume, path: str) -> BinaryIO:
    """A file of a volume opened through its file system (for data that has no plain extents: inside an NTFS
    record, behind btrfs' chunk tree, on an LVM volume)."""
    kind = detect(volume.stream)
    fs = open_filesystem(kind, volume.stream)
    node = (
        fs.mft.get(path)
        if kind == "ntfs"
        else fs.default_subvolume.get(path)
        if kind == "btrfs"
        else fs.get(path)
    )
    return node.open()  # type: ignore[no-any-return]


def extract(key: str, read: Read, size: int, volume_id: str, path: str, length: int) -> Iterator[bytes]:
    """The file's bytes, at most `length` of them (its catalogued size), in pieces."""
    disk = RemoteDisk(read, size)
    volume = next((v for v in volumes_of(key, disk, size) if v.id == volume_id), None)  # type: ignore[arg-type]
    if volume is None:
        raise OSError(f"the disk has no volume {volume_id}")
    handle = open_file(volume, path)
    left = length
    while left > 0:
        piece = handle.read(min(PAGE * 16, left))
        if not piece:
            break
        left -= len(piece)
        yield piece


# --- the child process ------------------------------------------------------------------------------------------------
def _entry_json(volume_id: str, entry: Entry) -> dict[str, Any]:
    data = {
        "v": volume_id,
        "p": entry.path,
        "t": entry.type,
        "s": entry.size,
        "m": entry.mode,
        "u": entry.uid,
        "g": entry.gid,
        "mt": entry.mtime,
        "ct": entry.ctime,
        "at": entry.atime,
        "i": entry.inode,
        "n": entry.links,
        "x": entry.extents,
    }
    if entry.link:
        data["lt"] = entry.link
    if entry.deps is not None:
        data["d"], data["h"] = entry.deps
    return data


def _remote(commands: BinaryIO, answers: BinaryIO, disk: str) -> Read:
    """Reads of a disk, asked of the parent over the pipe."""

    def remote(offset: int, length: int) -> bytes:
        commands.write(f"R {disk} {offset} {length}\n".encode())
        commands.flush()
        (count,) = LENGTH.unpack(answers.read(LENGTH.size))
        if count == FAILED_READ:
            raise OSError(f"disk {disk}: the stored image could not be read at {offset}")
        return answers.read(count)

    return remote


def confine(memory_mb: int, cpu_seconds: int) -> None:
    """Limits the child sets on itself before it reads a byte of the disk: memory, CPU time, no files written,
    no core dumps, few descriptors. The parsers are imported first (imports open files)."""
    import resource
    import signal

    import dissect.btrfs
    import dissect.extfs
    import dissect.fat
    import dissect.ntfs
    import dissect.volume.disk
    import dissect.volume.lvm
    import dissect.xfs  # noqa: F401

    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))


def main(argv: list[str] | None = None) -> int:
    """The child: confine itself, read the job, walk every disk, report, and exit."""
    import argparse

    parser = argparse.ArgumentParser(prog="catalog.walker")
    parser.add_argument("--memory-mb", type=int, default=1024)
    parser.add_argument("--cpu-seconds", type=int, default=3600)
    options = parser.parse_args(argv)
    confine(options.memory_mb, options.cpu_seconds)
    commands, answers = sys.stdout.buffer, sys.stdin.buffer
    job = json.loads(answers.readline())
    if "extract" in job:
        wanted = job["extract"]
        remote = _remote(commands, answers, wanted["disk"])
        for piece in extract(
            wanted["disk"],
            remote,
            int(wanted["size"]),
            wanted["volume"],
            wanted["path"],
            int(wanted["length"]),
        ):
            commands.write(f"F {len(piece)}\n".encode() + piece)
        commands.write(b"D\n")
        commands.flush()
        return 0

    plans = job.get("plans") or {}
    batches: dict[bytes, list[dict[str, Any]]] = {b"E": [], b"L": []}

    def flush(letter: bytes) -> None:
        if batches[letter]:
            commands.write(
                letter + b" " + json.dumps(batches[letter], separators=(",", ":")).encode() + b"\n"
            )
            batches[letter] = []

    for disk in job["disks"]:
        remote = _remote(commands, answers, disk["key"])
        for kind, item in walk_disk(disk["key"], remote, int(disk["size"]), plans.get(disk["key"])):
            if kind == "volume":
                flush(b"E")
                flush(b"L")
                commands.write(b"V " + json.dumps({"disk": disk["key"], **item}).encode() + b"\n")
                continue
            letter = b"E" if kind == "entry" else b"L"
            batches[letter].append(_entry_json(*item) if kind == "entry" else {"v": item[0], **item[1]})
            if len(batches[letter]) >= BATCH:
                flush(letter)
        commands.flush()
    commands.write(b"D\n")
    commands.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
