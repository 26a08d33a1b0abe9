"""The catalog walker: partitions, volumes and file systems of a disk image, file by file, with dissect.

It parses untrusted bytes (a guest's disk), so it runs in a child process (`python -m catalog.walker`) with memory,
CPU, file and time limits, and holds nothing worth stealing: no repository key, no database, no credential. It asks
its parent for disk bytes over a pipe, and tells it what it found:

    parent → child   one JSON line: {"disks": [{"key": ..., "size": ...}, ...]}
    child → parent   "R <disk> <offset> <length>\\n"  a read; the parent answers with a 4-byte length and the bytes
                     "V <json>\\n"                    a volume: where it is, its file system, or why it was skipped
                     "E <json>\\n"                    a batch of entries (files, folders, links)
                     "D\\n"                           done

An entry: volume id `v`, path `p`, type `t` (file, dir, symlink, hardlink, other), size `s`, mode `m`, owner `u`/`g`,
times `mt`/`ct`/`at` (ns), link target `lt`, inode `i`, and where its data lives `x`: extents as absolute disk
offsets [[file offset, disk offset, length], ...] (sparse holes left out), "resident" (NTFS data inside the MFT record), or null
when unknown (btrfs, LVM).

This module imports no Django and nothing of Bulwark, so a parser fault cannot reach the console's state.
"""

from __future__ import annotations

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
class RemoteDisk:
    """A read-only, seekable file over `read(offset, length)`, with a page cache (dissect reads in small pieces)."""

    def __init__(self, read: Read, size: int) -> None:
        self._read = read
        self.size = size
        self.position = 0
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self.bytes_read = 0

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
        length = max(0, min(length, self.size - self.position))
        parts = []
        while length > 0:
            number, within = divmod(self.position, PAGE)
            page = self._page(number)
            piece = page[within : within + length]
            if not piece:
                break
            parts.append(piece)
            self.position += len(piece)
            length -= len(piece)
        return b"".join(parts)

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

    def record(self) -> dict[str, Any]:
        return {
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
    from dissect.util.stream import RangeStream
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
        yield Volume(key, 0, size, RangeStream(disk, 0, size))
        return
    for partition in partitions:
        volume_id = f"{key}:p{partition.number}"
        if partition.offset + partition.size > size:
            yield Volume(
                volume_id,
                partition.offset,
                partition.size,
                RangeStream(disk, 0, 0),
                label=partition.name or "",
                state="skipped",
                reason=f"the partition ends past the end of the disk ({partition.offset + partition.size} > {size})",
            )
            continue
        stream = RangeStream(disk, partition.offset, partition.size)
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


def walk_tree(
    root: Any,
    identity: Callable[[Any], Any],
    children: Callable[[Any], Iterable[tuple[str, Any]]],
    describe: Callable[[Any, str], Entry],
    volume: Volume,
) -> Iterator[Entry]:
    """Depth-first over a file system's folders, the same for every file system: a folder seen twice is a loop
    (reported, not followed), a folder deeper than MAX_DEPTH is not entered, and an unreadable folder or entry is
    reported and skipped, never fatal."""
    seen: set[Any] = set()
    stack: list[tuple[Any, str, int]] = [(root, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        key = identity(node)
        if key is not None and key in seen:
            volume.errors.append(f"{path or '/'}: a directory loop ({key} again); not followed")
            continue
        seen.add(key)
        try:
            listing = list(children(node))
        except MemoryError:
            raise  # the memory limit: the walk stops, it does not go on with less
        except Exception as error:
            volume.errors.append(f"{path or '/'}: cannot list: {error}")
            continue
        for name, child in listing:
            if name in (".", "..") or not name:
                continue
            full = f"{path}/{name}"
            try:
                entry = describe(child, full)
            except MemoryError:
                raise  # the memory limit: the walk stops, it does not go on with less
            except Exception as error:
                volume.errors.append(f"{full}: {error}")
                continue
            if entry is None:
                continue
            yield entry
            if entry.type == "dir":
                if depth + 1 >= MAX_DEPTH:
                    volume.errors.append(f"{full}: deeper than {MAX_DEPTH} levels; not followed")
                else:
                    stack.append((child, full, depth + 1))


def walk_unix(root: Any, unit: int, volume: Volume) -> Iterator[Entry]:
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

    return walk_tree(root, lambda node: f"inode {node.inum}", children, describe, volume)


def _check_extents(entry: Entry, volume: Volume) -> None:
    """Extents that point outside the volume are a damaged (or crafted) inode: the file is listed, its data not."""
    if not isinstance(entry.extents, list) or volume.offset is None:
        return
    end = volume.offset + volume.size
    if any(offset < volume.offset or offset + length > end for _, offset, length in entry.extents):
        volume.errors.append(f"{entry.path}: its data runs point outside the volume; listed without its data")
        entry.extents = None


def walk_ntfs(fs: Any, volume: Volume) -> Iterator[Entry]:
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

    return walk_tree(
        fs.mft.root,
        lambda node: f"record {record(node).segment}",
        lambda node: record(node).listdir().items(),
        describe,
        volume,
    )


def walk_fat(fs: Any, volume: Volume) -> Iterator[Entry]:
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

    return walk_tree(fs.root, identity, lambda node: ((c.name, c) for c in node.iterdir()), describe, volume)


def walk_btrfs(fs: Any, volume: Volume) -> Iterator[Entry]:
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

    return walk_tree(
        fs.default_subvolume.root,
        lambda node: f"inode {node.inum}",
        lambda node: node.listdir().items(),
        describe,
        volume,
    )


def _ns(moment: Any) -> int | None:
    if moment is None:
        return None
    try:
        return int(moment.timestamp() * 1_000_000_000)
    except (AttributeError, OverflowError, OSError, ValueError):
        return None


def entries_of(volume: Volume) -> Iterator[Entry]:
    """Open the volume's file system and walk it; the volume says what it was and what went wrong."""
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
        if kind in ("ext", "xfs"):
            walker = walk_unix(fs.root, fs.block_size, volume)
        elif kind == "ntfs":
            walker = walk_ntfs(fs, volume)
        elif kind == "fat":
            walker = walk_fat(fs, volume)
        else:
            walker = walk_btrfs(fs, volume)
    except MemoryError:
        raise  # the memory limit: the walk stops, it does not go on with less
    except Exception as error:
        volume.state, volume.reason = "skipped", f"the {kind} file system cannot be opened: {error}"
        return
    for entry in walker:
        volume.files += 1
        yield entry
    if volume.errors:
        volume.state = "partial"
        volume.reason = f"{len(volume.errors)} item(s) could not be read"


def walk_disk(key: str, read: Read, size: int) -> Iterator[tuple[str, Any]]:
    """("volume", record) and ("entry", Entry) for one disk, volumes in order."""
    disk = RemoteDisk(read, size)
    for volume in volumes_of(key, disk, size):  # type: ignore[arg-type]
        if volume.state != "skipped":
            for entry in entries_of(volume):
                yield "entry", (volume.id, entry)
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

    for disk in job["disks"]:
        batch: list[dict[str, Any]] = []
        for kind, item in walk_disk(disk["key"], _remote(commands, answers, disk["key"]), int(disk["size"])):
            if kind == "entry":
                batch.append(_entry_json(*item))
                if len(batch) >= BATCH:
                    commands.write(b"E " + json.dumps(batch, separators=(",", ":")).encode() + b"\n")
                    batch = []
            else:
                if batch:
                    commands.write(b"E " + json.dumps(batch, separators=(",", ":")).encode() + b"\n")
                    batch = []
                commands.write(b"V " + json.dumps({"disk": disk["key"], **item}).encode() + b"\n")
        commands.flush()
    commands.write(b"D\n")
    commands.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
