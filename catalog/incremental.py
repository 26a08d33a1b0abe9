"""The incremental catalog: the next point of a disk reuses what did not change in its file systems.

A walk of ext2/3/4 or XFS records, for every entry and every folder listing, which ranges of the disk the
walker read to describe or list it and a digest of those bytes (`catalog.walker`). That record (the point's
*catalog index*) is kept for the newest catalogued point of a machine in a repository. The next point's catalog:

1. compares the two points' block tables: a stored block whose id did not change holds the same bytes, so an
   entry whose ranges lie in unchanged blocks is unchanged without reading anything (the run's changed areas,
   CBT or RCT, are exactly the blocks whose ids changed);
2. reads only the ranges that lie in changed blocks and compares their digest: a 64 KiB block of an inode table
   changes when one of its 256 inodes does, the other 255 entries stay unchanged;
3. sends the walker a plan: the entries to describe again, the folders to list again (with their entries that did
   not change), the folders it knew (a folder new at its path is walked whole); and the file system's geometry,
   which the walker checks before it trusts the plan (a different layout means a full walk);
4. puts the volume together from the previous index and what the walker read, in the walker's own order.

NTFS, FAT, btrfs and LVM volumes are walked whole each time (their entries have no dependency record yet).
Nothing here parses the guest's file systems: this process compares bytes and digests only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import zstandard

from catalog.models import CatalogIndex, RecoveryPoint
from engine.image import TABLE_SPAN, ImageReader
from engine.repository import Repository as EngineRepository

logger = logging.getLogger(__name__)

FORMAT = 1
MAX_DEP_BYTES = 64 * 1024 * 1024  # more than any real entry or folder reads: such a claim is not trusted
MAX_RANGES = 4096


# --- the index of a walk ---------------------------------------------------------------------------------------------
def _ranges_ok(ranges: Any, digest: Any) -> bool:
    if not isinstance(digest, str) or len(digest) != 32 or not isinstance(ranges, list):
        return False
    if len(ranges) > MAX_RANGES:
        return False
    total = 0
    for item in ranges:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in item)
        ):
            return False
        total += item[1]
    return total <= MAX_DEP_BYTES


def checked_listings(listings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only listings whose values can be true (the child may be subverted): a folder path, its inode, its
    entries as (name, inode) with plain names, and a well-formed dependency record."""
    kept = []
    for listing in listings:
        path, number, children = listing.get("p"), listing.get("i"), listing.get("c")
        if not (isinstance(path, str) and path.startswith("/") and "\x00" not in path):
            continue
        if not isinstance(number, int) or isinstance(number, bool) or not isinstance(children, list):
            continue
        if not all(
            isinstance(c, list)
            and len(c) == 2
            and isinstance(c[0], str)
            and c[0]
            and "/" not in c[0]
            and "\x00" not in c[0]
            and isinstance(c[1], int)
            for c in children
        ):
            continue
        if not _ranges_ok(listing.get("d"), listing.get("h")):
            continue
        kept.append(listing)
    return kept


def _child(folder: str, name: str) -> str:
    return f"{'' if folder == '/' else folder}/{name}"


def index_of(
    volumes: list[dict[str, Any]], entries: list[dict[str, Any]], listings: list[dict[str, Any]]
) -> dict[str, Any]:
    """The catalog index of a walk: per volume that has a geometry, its entries (with their dependencies) and its
    listings. Entries are copied as the walker described them (no content ids, no hard-link roles: those are
    worked out again on every point)."""
    indexed = {v["id"]: v for v in volumes if v.get("geometry") and v.get("state") != "skipped"}
    result: dict[str, Any] = {
        v: {
            "disk": record.get("disk"),
            "geometry": record["geometry"],
            "fixed": record.get("fixed") or [],
            "entries": [],
            "lists": [],
        }
        for v, record in indexed.items()
    }
    for entry in entries:
        volume = result.get(entry.get("v"))
        if volume is not None:
            volume["entries"].append({k: v for k, v in entry.items() if k != "c"})
    for listing in listings:
        volume = result.get(listing.get("v"))
        if volume is not None:
            volume["lists"].append(listing)
    return {"format": FORMAT, "volumes": result}


def save(point: RecoveryPoint, index: dict[str, Any]) -> int:
    """Keep the point's index, and forget older points' indexes of the same machine and repository (only the
    newest is ever compared with). Returns its stored size."""
    data = zstandard.ZstdCompressor(level=3).compress(json.dumps(index, separators=(",", ":")).encode())
    CatalogIndex.objects.update_or_create(point=point, defaults={"data": data})
    CatalogIndex.objects.filter(
        point__machine=point.machine_id,
        point__repository=point.repository_id,
        point__taken_at__lt=point.taken_at,
    ).delete()
    return len(data)


def load(point: RecoveryPoint) -> dict[str, Any] | None:
    row = CatalogIndex.objects.filter(point=point).first()
    if row is None:
        return None
    try:
        index = json.loads(zstandard.ZstdDecompressor().decompress(bytes(row.data)))
    except (zstandard.ZstdError, ValueError):
        logger.warning("the catalog index of point %s cannot be read; the next walk is a full one", point.pk)
        return None
    return index if isinstance(index, dict) and index.get("format") == FORMAT else None


# --- what changed ----------------------------------------------------------------------------------------------------
def changed_blocks(engine: EngineRepository, old: dict[str, Any], new: dict[str, Any]) -> set[int] | None:
    """The blocks of a disk whose stored ids differ between two points (None: not the same disk shape)."""
    if old.get("size") != new.get("size") or old.get("block_size") != new.get("block_size"):
        return None
    old_tables, new_tables = old.get("tables") or [], new.get("tables") or []
    if len(old_tables) != len(new_tables):
        return None
    changed: set[int] = set()
    for number, (before, after) in enumerate(zip(old_tables, new_tables, strict=True)):
        if before == after:
            continue
        first = engine.read_chunk(bytes.fromhex(before))
        second = engine.read_chunk(bytes.fromhex(after))
        for slot in range(max(len(first), len(second)) // 32):
            if first[slot * 32 : slot * 32 + 32] != second[slot * 32 : slot * 32 + 32]:
                changed.add(number * TABLE_SPAN + slot)
    return changed


class Unchanged:
    """Whether what an entry or listing read is still the same on the new point: without a read when its blocks
    did not change, by the digest of its ranges re-read when they did."""

    def __init__(self, engine: EngineRepository, disk: dict[str, Any], changed: set[int]) -> None:
        self.reader = ImageReader(engine, disk, cache_blocks=512)
        self.block_size = self.reader.block_size
        self.changed = changed
        self.read: set[int] = set()

    def __call__(self, item: dict[str, Any]) -> bool:
        ranges, digest = item.get("d"), item.get("h")
        if not _ranges_ok(ranges, digest):
            return False
        size = self.block_size
        touched = [
            number
            for offset, length in ranges
            for number in range(offset // size, (offset + max(length, 1) - 1) // size + 1)
            if number in self.changed
        ]
        if not touched:
            return True
        self.read.update(touched)
        hasher = hashlib.blake2b(digest_size=16)
        try:
            for offset, length in ranges:
                hasher.update(self.reader.pread(length, offset))
        except Exception:  # a block that cannot be read: read it again through the walker, which will say why
            logger.exception("a catalog dependency could not be read again")
            return False
        return hasher.hexdigest() == digest


# --- the plan for the walker, and the volume put together again -----------------------------------------------------
@dataclass
class Plan:
    """What the walker must read again on one volume, and what is reused (the previous index's volume)."""

    previous: dict[str, Any]
    describe: list[list[Any]] = field(default_factory=list)
    lists: list[list[Any]] = field(default_factory=list)
    dirs: dict[str, int] = field(default_factory=dict)

    def job(self) -> dict[str, Any]:
        return {
            "geometry": self.previous["geometry"],
            "dirs": self.dirs,
            "describe": self.describe,
            "lists": self.lists,
        }


def plan_volume(previous: dict[str, Any], unchanged: Unchanged) -> Plan | None:
    """The plan for one volume from its previous index (None: it must be walked whole)."""
    entries = {
        e["p"]: e for e in previous.get("entries", []) if isinstance(e, dict) and isinstance(e.get("p"), str)
    }
    lists = {item["p"]: item for item in previous.get("lists", []) if isinstance(item, dict)}
    if "/" not in lists:
        return None
    plan = Plan(previous)
    dirty = {path for path, entry in entries.items() if not unchanged(entry)}
    plan.dirs = {
        path: int(entry["i"])
        for path, entry in entries.items()
        if entry.get("t") == "dir" and isinstance(entry.get("i"), int)
    }
    plan.dirs["/"] = int(lists["/"]["i"])
    relist = {path for path, listing in lists.items() if path in dirty or not unchanged(listing)}
    relist.update(
        path for path in plan.dirs if path not in lists
    )  # not listed last time (an error): try again
    for path in sorted(relist):
        listing = lists.get(path)
        kept = [
            [name, number]
            for name, number in (listing or {}).get("c", [])
            if (child := _child(path, name)) not in dirty and entries.get(child, {}).get("i") == number
        ]
        plan.lists.append([path, plan.dirs.get(path, listing["i"] if listing else 0), kept])
    for path, listing in lists.items():
        if path in relist:
            continue
        for name, number in listing.get("c", []):
            child = _child(path, name)
            if child in dirty or entries.get(child, {}).get("i") != number:
                plan.describe.append([child, number])
    return plan


MAX_DEPTH = 256  # as the walker's


def rebuild(
    plan: Plan, described: list[dict[str, Any]], relisted: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The whole volume from the previous index and what the walker read again: (entries, listings, errors),
    in the order a full walk gives (so that a hard link's first name stays the first)."""
    previous_entries = {e["p"]: e for e in plan.previous.get("entries", [])}
    previous_lists = {item["p"]: item for item in plan.previous.get("lists", [])}
    fresh_entries = {e["p"]: e for e in described}
    fresh_lists = {item["p"]: item for item in relisted}
    entries: list[dict[str, Any]] = []
    listings: list[dict[str, Any]] = []
    errors: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[str, int]] = [("/", 0)]
    while stack:
        path, level = stack.pop()
        listing = fresh_lists.get(path) or previous_lists.get(path)
        if listing is None:
            continue  # it could not be listed: the walker said why
        if listing["i"] in seen:
            errors.append(f"{path}: a directory loop (inode {listing['i']} again); not followed")
            continue
        seen.add(listing["i"])
        listings.append(listing)
        for name, number in listing["c"]:
            full = _child(path, name)
            entry = fresh_entries.get(full)
            if entry is None or entry.get("i") != number:
                entry = previous_entries.get(full)
                if entry is None or entry.get("i") != number or full in fresh_entries:
                    continue  # not described (the walker said why), or it was and it is another inode now
            entries.append(entry)
            if entry.get("t") == "dir" and level + 1 < MAX_DEPTH:
                stack.append((full, level + 1))
    return entries, listings, errors
