"""Catalog a recovery point: its stored disks walked by a sandboxed child, its files recorded as intervals.

The child (`catalog.walker`) parses the guest's disk, which is untrusted: it gets no key, no database and no
credential, only the bytes it asks for, and it runs under memory, CPU and file limits with a wall-clock
deadline. A crafted image can make it fail, never the worker: the point's catalog says "partial" or "failed"
and why. The backup itself never fails because of its catalog.

Versions are intervals: a path whose content did not change since the machine's previous catalogued point
extends that row (its last point moves on) instead of adding one.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from catalog import incremental, repositories
from catalog.choices import CatalogState, EntryKind, PointKind
from catalog.models import FileVersion, PathName, RecoveryPoint
from engine.image import ImageReader
from engine.repository import Repository as EngineRepository
from engine.repository import Snapshot

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
MAX_READ = 4 * 1024 * 1024
LENGTH_FAILED = 0xFFFFFFFF
WRITE_BATCH = 2000


class WalkFailed(Exception):
    """The child stopped before it was done (a limit, a crash, the deadline); str() says which."""


@dataclass
class Walk:
    volumes: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    listings: list[dict[str, Any]] = field(default_factory=list)
    read_bytes: int = 0
    stopped: str = ""  # why the walk ended early ("" when it finished)


def _child_command(memory_mb: int, cpu_seconds: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "catalog.walker",
        "--memory-mb",
        str(memory_mb),
        "--cpu-seconds",
        str(cpu_seconds),
    ]


def child_environment() -> dict[str, str]:
    """Only what the interpreter needs: no credential key, no database address, no secret reaches the child."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _spawn(memory_mb: int, seconds: float, *, stderr: int) -> subprocess.Popen[bytes]:
    """The walker child, in a process group of its own (killed whole), with nothing of ours in its environment."""
    return subprocess.Popen(  # noqa: S603  (our own interpreter and module; the guest's bytes go over the pipe)
        _child_command(memory_mb, int(seconds) + 5),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=str(ROOT),
        env=child_environment(),
        process_group=0,
    )


def walk_snapshot(
    engine: EngineRepository,
    snapshot: Snapshot,
    *,
    seconds: float | None = None,
    memory_mb: int | None = None,
    plans: dict[str, dict[str, Any]] | None = None,
) -> Walk:
    """Walk every disk of an image snapshot in a child process; what it found, and why it stopped if it did.
    `plans` (per disk, per volume: `catalog.incremental.Plan.job`) limit the walk to what changed."""
    seconds = float(seconds if seconds is not None else settings.BULWARK_CATALOG_SECONDS)
    memory_mb = int(memory_mb if memory_mb is not None else settings.BULWARK_CATALOG_MEMORY_MB)
    disks = {str(disk["name"]): disk for disk in snapshot.disks}
    readers = {name: ImageReader(engine, disk, cache_blocks=64) for name, disk in disks.items()}
    job = {
        "disks": [{"key": name, "size": int(disk["size"])} for name, disk in disks.items()],
        "plans": plans or {},
    }
    child = _spawn(memory_mb, seconds, stderr=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    walk = Walk()
    timed_out = threading.Event()

    def deadline() -> None:
        timed_out.set()
        _kill(child)

    timer = threading.Timer(seconds, deadline)
    timer.daemon = True
    timer.start()
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(child.stderr.read()), daemon=True)  # type: ignore[union-attr]
    drain.start()
    try:
        child.stdin.write(json.dumps(job).encode() + b"\n")
        child.stdin.flush()
        done = False
        for line in child.stdout:
            command = line[:1]
            if command == b"R":
                _, disk, offset, length = line.split()
                walk.read_bytes += _answer(child, readers.get(disk.decode()), int(offset), int(length))
            elif command == b"E":
                walk.entries.extend(json.loads(line[2:]))
            elif command == b"L":
                walk.listings.extend(json.loads(line[2:]))
            elif command == b"V":
                walk.volumes.append(json.loads(line[2:]))
            elif command == b"D":
                done = True
                break
        if not done:
            child.wait(timeout=10)
            walk.stopped = _why(child.returncode, timed_out.is_set(), seconds, memory_mb, b"".join(errors))
    except (BrokenPipeError, OSError) as error:
        walk.stopped = f"the walker stopped: {error}"
    finally:
        timer.cancel()
        _kill(child)
        drain.join(timeout=5)
    if walk.stopped and timed_out.is_set():
        walk.stopped = f"it took longer than the {seconds:.0f} s allowed"
    return walk


def read_through_walker(
    engine: EngineRepository, snapshot: Snapshot, disk: dict[str, Any], volume: str, path: str, size: int
) -> Iterator[bytes]:
    """A file's bytes read by the sandboxed child through its file system (data inside an NTFS record, on
    btrfs or LVM): the same confinement and deadline as a walk; the worker only serves stored blocks."""
    seconds = float(settings.BULWARK_CATALOG_SECONDS)
    reader = ImageReader(engine, disk, cache_blocks=64)
    child = _spawn(int(settings.BULWARK_CATALOG_MEMORY_MB), seconds, stderr=subprocess.DEVNULL)
    assert child.stdin is not None and child.stdout is not None
    timer = threading.Timer(seconds, lambda: _kill(child))
    timer.daemon = True
    timer.start()
    job = {
        "extract": {
            "disk": str(disk["name"]),
            "size": int(disk["size"]),
            "volume": volume,
            "path": path,
            "length": size,
        }
    }
    try:
        child.stdin.write(json.dumps(job).encode() + b"\n")
        child.stdin.flush()
        while line := child.stdout.readline():
            if line[:1] == b"R":
                _, _, offset, length = line.split()
                _answer(child, reader, int(offset), int(length))
            elif line[:1] == b"F":
                yield child.stdout.read(int(line.split()[1]))
            elif line[:1] == b"D":
                return
        raise WalkFailed(f"{path} could not be read through its file system")
    finally:
        timer.cancel()
        _kill(child)


def _answer(child: subprocess.Popen[bytes], reader: ImageReader | None, offset: int, length: int) -> int:
    """Answer one of the child's reads from the stored disk (a length, then the bytes; a failed read is the
    length LENGTH_FAILED); how many bytes were sent."""
    assert child.stdin is not None
    data = None
    if reader is not None and offset >= 0 and length >= 0:
        try:
            data = reader.pread(min(length, MAX_READ), offset)
        except Exception:
            logger.exception("the catalog could not read the stored image at %s", offset)
    if data is None:
        child.stdin.write(LENGTH_FAILED.to_bytes(4, "big"))
    else:
        child.stdin.write(len(data).to_bytes(4, "big") + data)
    child.stdin.flush()
    return len(data or b"")


def _kill(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


def _why(code: int | None, timed_out: bool, seconds: float, memory_mb: int, stderr: bytes) -> str:
    if timed_out:
        return f"it took longer than the {seconds:.0f} s allowed"
    text = stderr.decode(errors="replace").strip().splitlines()
    last = text[-1][:300] if text else ""
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        if -code == signal.SIGXCPU:
            return "it used more CPU time than allowed"
        return f"the walker was stopped by {name}"
    if "MemoryError" in last:
        return f"it needed more than the {memory_mb} MiB of memory allowed"
    return f"the walker failed ({code}): {last}" if last else f"the walker exited with {code}"


# --- recording -------------------------------------------------------------------------------------------------------
def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _parent_of(path: str) -> str:
    parent = path.rsplit("/", 1)[0]
    return parent or "/"


def path_ids(paths: Iterable[str]) -> dict[str, int]:
    """The PathName id of each path, creating the ones not stored yet."""
    wanted = {_digest(path): path for path in paths}
    found: dict[str, int] = {}
    digests = list(wanted)
    for start in range(0, len(digests), WRITE_BATCH):
        part = digests[start : start + WRITE_BATCH]
        found.update(PathName.objects.filter(digest__in=part).values_list("digest", "pk"))
    missing = [
        (digest, text, text.rsplit("/", 1)[-1] or "/")
        for digest, text in wanted.items()
        if digest not in found
    ]
    if missing:
        table = PathName._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                from psycopg2.extras import execute_values

                execute_values(
                    cursor.cursor,
                    f"INSERT INTO {table} (digest, text, name) VALUES %s ON CONFLICT (digest) DO NOTHING",  # noqa: S608
                    missing,
                    page_size=WRITE_BATCH,
                )
            else:
                cursor.executemany(
                    f"INSERT OR IGNORE INTO {table} (digest, text, name) VALUES (%s, %s, %s)",  # noqa: S608
                    missing,
                )
        for start in range(0, len(missing), WRITE_BATCH):
            part = [digest for digest, _, _ in missing[start : start + WRITE_BATCH]]
            found.update(PathName.objects.filter(digest__in=part).values_list("digest", "pk"))
    return {text: found[digest] for digest, text in wanted.items()}


def signature(entry: dict[str, Any]) -> str:
    """What makes two sightings of a path the same version: its kind, size, times, owner, mode, link and where
    its data lives (a rewrite in place changes the times; a move of its blocks changes the extents)."""
    parts = [entry.get(key) for key in ("t", "s", "m", "u", "g", "mt", "ct", "lt", "i", "x", "c")]
    return hashlib.blake2b(json.dumps(parts, separators=(",", ":")).encode(), digest_size=16).hexdigest()


INT64 = 2**63 - 1
INT_FIELDS = ("s", "m", "u", "g", "mt", "ct", "at", "i", "n")


def checked_entries(walk: Walk) -> int:
    """Keep only entries whose values can be true: the child parsed an untrusted disk (a damaged inode gives a
    size of 2^64, a path with a NUL) and may itself be subverted. Times out of range become unknown; anything
    else impossible drops the entry. Returns how many were dropped."""
    kept: list[dict[str, Any]] = []
    for entry in walk.entries:
        try:
            if not isinstance(entry.get("p"), str) or not entry["p"].startswith("/") or "\x00" in entry["p"]:
                raise ValueError("path")
            if not isinstance(entry.get("v"), str) or not isinstance(entry.get("t"), str):
                raise ValueError("volume or type")
            for key in INT_FIELDS:
                value = entry.get(key)
                if value is None:
                    continue
                if not isinstance(value, int) or isinstance(value, bool) or not -INT64 <= value <= INT64:
                    if key in ("mt", "ct", "at", "u", "g", "i"):
                        entry[key] = None  # unknown, not wrong
                        continue
                    raise ValueError(key)
            if entry.get("s") is not None and entry["s"] < 0:
                raise ValueError("size")
            extents = entry.get("x")
            if (
                isinstance(extents, list)
                and not all(
                    isinstance(e, list)
                    and len(e) == 3
                    and all(isinstance(n, int) and 0 <= n <= INT64 for n in e)
                    for e in extents
                )
            ) or (extents is not None and not isinstance(extents, list) and extents != "resident"):
                entry["x"] = None
            if entry.get("lt") is not None and (not isinstance(entry["lt"], str) or "\x00" in entry["lt"]):
                entry["lt"] = ""
            if "\x00" in entry["v"]:
                raise ValueError("volume")
        except ValueError:
            continue
        kept.append(entry)
    dropped = len(walk.entries) - len(kept)
    walk.entries = kept
    return dropped


def _content_ids(engine: EngineRepository, snapshot: Snapshot, entries: list[dict[str, Any]]) -> None:
    """Each file's content, as the ids of the stored blocks its extents cover: two sightings with the same ids
    hold the same bytes (a rewrite in place within one timestamp tick still shows). A block shared with another
    file's data makes an unchanged file look changed at worst: one row more, never a wrong one."""
    readers = {str(disk["name"]): ImageReader(engine, disk) for disk in snapshot.disks}
    for entry in entries:
        extents = entry.get("x")
        if not isinstance(extents, list) or not extents:
            continue
        reader = readers.get(str(entry["v"]).split(":", 1)[0])
        if reader is None:
            continue
        digest = hashlib.blake2b(digest_size=16)
        for _, offset, length in extents:
            for number in range(offset // reader.block_size, (offset + length - 1) // reader.block_size + 1):
                digest.update(reader.block_id(number))
        entry["c"] = digest.hexdigest()


def _hard_links(entries: list[dict[str, Any]]) -> None:
    """A second name of an inode already seen on the volume is a hard link to the first."""
    first: dict[tuple[str, int], str] = {}
    for entry in entries:
        if entry.get("t") != "file" or not entry.get("i") or int(entry.get("n") or 1) < 2:
            continue
        key = (entry["v"], int(entry["i"]))
        if key in first:
            entry["t"], entry["lt"] = EntryKind.HARDLINK, first[key]
        else:
            first[key] = entry["p"]


def previous_point(point: RecoveryPoint) -> RecoveryPoint | None:
    """The machine's catalogued point before this one in the same repository: what its versions continue."""
    return (
        RecoveryPoint.objects.filter(
            machine=point.machine_id,
            repository=point.repository_id,
            taken_at__lt=point.taken_at,
            catalog_state__in=[CatalogState.COMPLETE, CatalogState.PARTIAL],
        )
        .order_by("-taken_at", "-pk")
        .first()
    )


def record_versions(point: RecoveryPoint, entries: list[dict[str, Any]]) -> tuple[int, int]:
    """Write the point's entries as intervals: (versions extended, versions added). The previous point's rows
    that are seen again move their last point on in one statement; only new versions look up their paths."""
    previous = previous_point(point)
    open_rows: dict[tuple[str, str, str], int] = {}
    if previous is not None:
        open_rows = {
            (volume, digest, sig): pk
            for volume, digest, sig, pk in FileVersion.objects.filter(
                machine=point.machine_id, repository=point.repository_id, last_point=previous
            ).values_list("volume", "path__digest", "signature", "pk")
        }
    seen = len(open_rows)
    fresh: list[tuple[dict[str, Any], str]] = []
    for entry in entries:
        sig = signature(entry)
        if open_rows.pop((entry["v"][:200], _digest(entry["p"]), sig), None) is None:
            fresh.append((entry, sig))
    ids = path_ids({e["p"] for e, _ in fresh} | {_parent_of(e["p"]) for e, _ in fresh})
    taken_at = connection.ops.adapt_datetimefield_value(point.taken_at)
    rows = [
        (
            point.machine_id,
            point.repository_id,
            entry["v"][:200],
            ids[entry["p"]],
            ids[_parent_of(entry["p"])],
            entry["t"] if entry["t"] in ENTRY_KINDS else EntryKind.OTHER,
            max(0, int(entry.get("s") or 0)),
            int(entry.get("m") or 0) & 0o7777,
            entry.get("u"),
            entry.get("g"),
            entry.get("mt"),
            entry.get("ct"),
            entry.get("at"),
            str(entry.get("lt") or ""),
            entry.get("i"),
            None if entry.get("x") is None else json.dumps(entry["x"], separators=(",", ":")),
            sig,
            point.pk,
            point.pk,
            taken_at,
            taken_at,
        )
        for entry, sig in fresh
    ]
    extended = seen - len(open_rows)
    if extended and previous is not None:
        # The rows still open are the ones not seen again: every other row of the previous point goes on.
        gone = list(open_rows.values())
        still_open = FileVersion.objects.filter(
            machine=point.machine_id, repository=point.repository_id, last_point=previous
        )
        if len(gone) <= 30_000:  # one statement (SQLite takes 32,766 parameters; psycopg2 inlines them)
            still_open.exclude(pk__in=gone).update(last_point=point, last_at=point.taken_at)
        else:
            gone_set = set(gone)
            extend = [pk for pk in still_open.values_list("pk", flat=True) if pk not in gone_set]
            for start in range(0, len(extend), WRITE_BATCH):
                FileVersion.objects.filter(pk__in=extend[start : start + WRITE_BATCH]).update(
                    last_point=point, last_at=point.taken_at
                )
    insert_versions(rows)
    return extended, len(rows)


ENTRY_KINDS = frozenset(EntryKind.values)
VERSION_COLUMNS = (
    "machine_id",
    "repository_id",
    "volume",
    "path_id",
    "parent_id",
    "kind",
    "size",
    "mode",
    "uid",
    "gid",
    "mtime_ns",
    "ctime_ns",
    "atime_ns",
    "link_target",
    "inode",
    "extents",
    "signature",
    "first_point_id",
    "last_point_id",
    "first_at",
    "last_at",
)


def insert_versions(rows: list[tuple[Any, ...]]) -> None:
    """New version rows (in VERSION_COLUMNS order, extents as JSON text), written without building a model per
    row: PostgreSQL's COPY, SQLite's executemany (the ORM's bulk_create spent 3 s of Python on 22,700 rows)."""
    if not rows:
        return
    table = FileVersion._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            buffer = io.StringIO()
            for row in rows:
                buffer.write("\t".join(_copy_text(value) for value in row))
                buffer.write("\n")
            buffer.seek(0)
            cursor.cursor.copy_expert(  # the psycopg2 cursor under Django's wrapper
                f"COPY {table} ({', '.join(VERSION_COLUMNS)}) FROM STDIN", buffer
            )
        else:
            marks = ", ".join(["%s"] * len(VERSION_COLUMNS))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(VERSION_COLUMNS)}) VALUES ({marks})", rows)  # noqa: S608


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    """A value in COPY's text format: NULL as \\N, backslash, tab, newline and carriage return escaped."""
    if value is None:
        return "\\N"
    if type(value) is int:
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


def _state_of(walk: Walk) -> tuple[str, str]:
    skipped = [v for v in walk.volumes if v.get("state") in ("skipped", "partial")]
    words = [f"{v['id']}: {v.get('reason') or v.get('state')}" for v in skipped]
    if walk.stopped:
        detail = "; ".join([f"the walk stopped: {walk.stopped}", *words])
        return (CatalogState.PARTIAL if walk.entries else CatalogState.FAILED), detail
    if not walk.entries and walk.volumes and all(v.get("state") == "skipped" for v in walk.volumes):
        return CatalogState.FAILED, "; ".join(words) or "no readable volume"
    if skipped:
        return CatalogState.PARTIAL, "; ".join(words)
    return CatalogState.COMPLETE, ""


def _claim(point: RecoveryPoint) -> bool:
    return bool(
        RecoveryPoint.objects.filter(pk=point.pk, catalog_state=CatalogState.PENDING).update(
            catalog_state=CatalogState.RUNNING, catalog_started_at=timezone.now()
        )
    )


def points_to_catalog(*, now: datetime.datetime | None = None) -> list[RecoveryPoint]:
    """Points waiting for a catalog for more than a few minutes (their task was lost), and points whose walk
    outlived its deadline by far (the worker running it died): those are set back to waiting and returned."""
    now = now or timezone.now()
    stale = now - datetime.timedelta(seconds=settings.BULWARK_CATALOG_SECONDS + 300)
    RecoveryPoint.objects.filter(catalog_state=CatalogState.RUNNING, catalog_started_at__lt=stale).update(
        catalog_state=CatalogState.PENDING
    )
    waiting = now - datetime.timedelta(minutes=5)
    return list(
        RecoveryPoint.objects.filter(catalog_state=CatalogState.PENDING, created_at__lt=waiting)
        .select_related("repository__passphrase")
        .order_by("taken_at")[:100]
    )


@dataclass
class Found:
    """What a point holds, however it was read: its entries, volumes, state in words, and what it cost."""

    entries: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    state: str
    detail: str = ""
    read_bytes: int = 0
    walked: float = 0.0  # seconds spent reading, before recording
    index: dict[str, Any] | None = None  # what the next point's catalog compares with (image points)


def catalog_point(point: RecoveryPoint) -> RecoveryPoint:
    """Catalog a point (once: a second call finds it claimed). Never raises for what the point holds."""
    if not _claim(point):
        return RecoveryPoint.objects.get(pk=point.pk)
    started = time.monotonic()
    try:
        engine, snapshot = repositories.open_point(point)
        found = (
            _image_entries(engine, snapshot, point)
            if point.kind == PointKind.IMAGE
            else _tree_entries(engine, snapshot)
        )
        found.walked = time.monotonic() - started
        _hard_links(found.entries)
        with transaction.atomic():
            extended, added = record_versions(point, found.entries)
            if found.index is not None:
                incremental.save(point, found.index)
            RecoveryPoint.objects.filter(pk=point.pk).update(
                catalog_state=found.state,
                catalog_detail=found.detail[:5000],
                catalog_volumes=found.volumes,
                catalog_entries=len(found.entries),
                catalog_seconds=time.monotonic() - started,
                catalog_read_bytes=found.read_bytes,
            )
        logger.info(
            "catalog of point %s: %s, %d entries (%d versions extended, %d new), %d bytes read; "
            "walk %.2f s, recording %.2f s",
            point.pk,
            found.state,
            len(found.entries),
            extended,
            added,
            found.read_bytes,
            found.walked,
            time.monotonic() - started - found.walked,
        )
    except Exception as error:
        logger.exception("catalog of point %s failed", point.pk)
        RecoveryPoint.objects.filter(pk=point.pk).update(
            catalog_state=CatalogState.FAILED,
            catalog_detail=f"{type(error).__name__}: {error}"[:5000],
            catalog_seconds=time.monotonic() - started,
        )
    return RecoveryPoint.objects.get(pk=point.pk)


def _image_entries(engine: EngineRepository, snapshot: Snapshot, point: RecoveryPoint) -> Found:
    """An image point: its disks walked by the sandboxed child (only what changed, when the previous point's
    index allows), what it said checked, the volumes put together, contents identified."""
    plans, checked_bytes = _plans(engine, snapshot, point)
    jobs = {disk: {volume: plan.job() for volume, plan in volumes.items()} for disk, volumes in plans.items()}
    walk = walk_snapshot(engine, snapshot, plans=jobs)
    dropped = checked_entries(walk)
    walk.listings = incremental.checked_listings(walk.listings)
    entries, listings = _assemble(walk, plans)
    index = incremental.index_of(walk.volumes, entries, listings)
    _content_ids(engine, snapshot, entries)
    walk.entries = entries
    state, detail = _state_of(walk)
    if dropped:
        state = CatalogState.PARTIAL if walk.entries else CatalogState.FAILED
        detail = "; ".join(
            filter(None, [f"{dropped} entries with impossible values (a damaged file system)", detail])
        )
    return Found(entries, walk.volumes, state, detail, walk.read_bytes + checked_bytes, index=index)


def _plans(
    engine: EngineRepository, snapshot: Snapshot, point: RecoveryPoint
) -> tuple[dict[str, dict[str, incremental.Plan]], int]:
    """Per disk and volume, what the walker must read again (from the previous point's index and the blocks
    that changed since), and how many bytes of the new point that check read. Empty: walk everything."""
    previous = previous_point(point)
    index = incremental.load(previous) if previous is not None else None
    if previous is None or index is None:
        return {}, 0
    plans: dict[str, dict[str, incremental.Plan]] = {}
    read = 0
    try:
        before = {str(d["name"]): d for d in engine.load_snapshot(previous.snapshot_id).disks}
        for disk in snapshot.disks:
            name = str(disk["name"])
            changed = incremental.changed_blocks(engine, before[name], disk) if name in before else None
            if changed is None:
                continue
            unchanged = incremental.Unchanged(engine, disk, changed)
            for volume_id, volume in index["volumes"].items():
                if volume.get("disk") == name and (plan := incremental.plan_volume(volume, unchanged)):
                    plans.setdefault(name, {})[volume_id] = plan
            read += len(unchanged.read) * unchanged.block_size
    except Exception:  # the incremental path only saves time: when it cannot be used, walk everything
        logger.exception("point %s: the previous catalog cannot be reused; walking everything", point.pk)
        return {}, 0
    return plans, read


def _assemble(
    walk: Walk, plans: dict[str, dict[str, incremental.Plan]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every volume's entries and listings in the walk's order: volumes walked whole as the walker gave them,
    volumes walked incrementally put together from the previous index and what was read again."""
    planned = {volume: plan for volumes in plans.values() for volume, plan in volumes.items()}
    entries: dict[str, list[dict[str, Any]]] = {}
    listings: dict[str, list[dict[str, Any]]] = {}
    for entry in walk.entries:
        entries.setdefault(entry["v"], []).append(entry)
    for listing in walk.listings:
        listings.setdefault(str(listing.get("v")), []).append(listing)
    all_entries: list[dict[str, Any]] = []
    all_listings: list[dict[str, Any]] = []
    for record in walk.volumes:
        volume = str(record.get("id"))
        found, listed = entries.pop(volume, []), listings.pop(volume, [])
        if record.get("incremental") and volume in planned:
            described = len(found)
            found, listed, errors = incremental.rebuild(planned[volume], found, listed)
            record["files"], record["reused"] = len(found), max(0, len(found) - described)
            if errors:
                record["errors"] = (record.get("errors") or []) + errors
                record["error_count"] = int(record.get("error_count") or 0) + len(errors)
                record["state"], record["reason"] = (
                    "partial",
                    f"{record['error_count']} item(s) could not be read",
                )
        all_entries.extend(found)
        all_listings.extend(listed)
    for rest in entries.values():  # entries of no volume the walker reported: kept, as before
        all_entries.extend(rest)
    return all_entries, all_listings


def _tree_entries(engine: EngineRepository, snapshot: Snapshot) -> Found:
    """An agent's file point: the same rows, from its trees (no child: the trees are the engine's own format,
    checked as they are read)."""
    from engine.files import read_tree

    entries: list[dict[str, Any]] = []
    if snapshot.tree:
        stack: list[tuple[str, str]] = [(snapshot.tree, "")]
        while stack:
            tree, path = stack.pop()
            for item in read_tree(engine, tree):
                entries.append(_tree_entry(item, path))
                if item.get("type") == "dir" and item.get("tree"):
                    stack.append((item["tree"], f"{path}/{item['name']}"))
    volumes = [{"id": "files", "filesystem": "files", "state": "complete", "files": len(entries)}]
    return Found(entries, volumes, CatalogState.COMPLETE)


def _tree_entry(item: dict[str, Any], path: str) -> dict[str, Any]:
    kind = str(item.get("type"))
    kind = kind if kind in EntryKind.values else EntryKind.OTHER
    return {
        "v": "files",
        "p": f"{path}/{item['name']}",
        "t": kind,
        "s": int(item.get("size") or 0),
        "m": int(item.get("mode") or 0),
        "u": item.get("uid"),
        "g": item.get("gid"),
        "mt": item.get("mtime_ns"),
        "ct": item.get("ctime_ns"),
        "at": item.get("atime_ns"),
        "lt": item.get("target") or "",
        "i": item.get("inode"),
        "n": item.get("nlink") or 1,
        "x": None,
        "c": item.get("chunks"),  # content: unchanged chunks are an unchanged file
    }


def forget_points(points: Iterable[RecoveryPoint]) -> None:
    """Before points are deleted (retention): every interval that starts or ends at one of them is narrowed to
    the points that remain, or removed when none remains inside it. Nothing refers to a forgotten point."""
    points = list(points)
    if not points:
        return
    gone = {point.pk for point in points}
    for machine_id, repository_id in {(p.machine_id, p.repository_id) for p in points}:
        remaining = list(
            RecoveryPoint.objects.filter(machine_id=machine_id, repository_id=repository_id)
            .exclude(pk__in=gone)
            .exclude(catalog_state__in=[CatalogState.PENDING, CatalogState.RUNNING, CatalogState.NONE])
            .order_by("taken_at", "pk")
            .values_list("pk", "taken_at")
        )
        touched = FileVersion.objects.filter(machine_id=machine_id, repository_id=repository_id).filter(
            Q(first_point__in=gone) | Q(last_point__in=gone)
        )
        times = [at for _, at in remaining]
        delete, update = [], []
        for version in touched.only("pk", "first_at", "last_at", "first_point", "last_point"):
            # The remaining points inside the interval: a slice of the ordered list, found by bisection.
            first, last = bisect_left(times, version.first_at), bisect_right(times, version.last_at) - 1
            if first > last:
                delete.append(version.pk)
                continue
            version.first_point_id, version.first_at = remaining[first]
            version.last_point_id, version.last_at = remaining[last]
            update.append(version)
        for start in range(0, len(delete), WRITE_BATCH):
            FileVersion.objects.filter(pk__in=delete[start : start + WRITE_BATCH]).delete()
        FileVersion.objects.bulk_update(
            update, ["first_point", "first_at", "last_point", "last_at"], batch_size=WRITE_BATCH
        )
