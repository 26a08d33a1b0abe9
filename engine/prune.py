"""Forget snapshots by retention and prune the data no snapshot uses, safely beside running backups.

Prune works in two phases ("fossil collection"):
1. Packs whose chunks no snapshot uses are taken out of the index and listed in a sealed pending marker
   (pending/<name>), stamped with the storage's clock. New backups no longer deduplicate against them.
2. A later prune deletes a marked pack only when the grace period has passed on the storage's clock and no
   backup lease that started before the mark is still alive; if a snapshot committed meanwhile uses one of
   its chunks, the pack goes back into the index instead. Readers find marked packs through the marker.
Unindexed packs (left by killed backups) are deleted once older than the grace period and older than every
live backup lease. Every step is ordered so that a crash at any instant loses nothing a snapshot needs.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from engine import format as fmt
from engine.errors import EngineError
from engine.image import ZERO_ID
from engine.index import ChunkIndex
from engine.locks import LeaseHolder, live_leases
from engine.maintenance import _referenced_ids
from engine.progress import NullProgress, Progress
from engine.repository import DATA, INDEX, PENDING, Repository, new_object_name, pack_key
from engine.retention import Decision, RetentionSpec, plan_retention

DEFAULT_GRACE = datetime.timedelta(hours=2)
# A pack whose unused share of stored bytes reaches this is repacked: its live chunks are copied into new
# packs and the old pack is set aside like an unused one. Below it, the space is not worth the rewrite.
REPACK_THRESHOLD = 0.3


class PruneRefused(EngineError):
    """Prune found the repository in a state where deleting anything could lose data."""


@dataclass
class PruneReport:
    dry_run: bool
    snapshots: int = 0
    used_chunks: int = 0
    marked_packs: list[str] = field(default_factory=list)  # phase 1: set aside now
    deleted_packs: list[str] = field(default_factory=list)  # phase 2: gone
    resurrected_packs: list[str] = field(default_factory=list)
    waiting_packs: list[str] = field(default_factory=list)  # marked, grace period not over
    repacked_packs: list[str] = field(default_factory=list)  # live chunks copied out, then set aside
    deleted_orphans: list[str] = field(default_factory=list)
    deleted_temporaries: int = 0
    freed_bytes: int = 0


def forget(repository: Repository, spec: RetentionSpec, *, dry_run: bool = False) -> list[Decision]:
    """Apply GFS retention: delete the manifests of snapshots no rule keeps (dry run: only say which)."""
    decisions = plan_retention(repository.snapshots(), spec)
    if not dry_run:
        for decision in decisions:
            if not decision.keep:
                repository.forget_snapshot(decision.snapshot.id)
    return decisions


def _microseconds(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def prune(
    repository: Repository,
    *,
    grace: datetime.timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    repack_threshold: float = REPACK_THRESHOLD,
    progress: Progress | None = None,
) -> PruneReport:
    progress = progress or NullProgress()
    storage = repository.storage
    report = PruneReport(dry_run=dry_run)
    with LeaseHolder(storage, "prune", exclusive=True):
        now = storage.now()
        backups = live_leases(storage, kind="backup")

        index_keys = [info.key for info in storage.list(INDEX)]
        indexed: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = []
        for key in index_keys:
            try:
                indexed.extend(repository.read_index_file(key))
            except EngineError as error:
                raise PruneRefused(
                    f"index file {key} is unreadable ({error}); run rebuild-index first"
                ) from None
        markers = repository.read_pending()
        in_index = ChunkIndex()
        in_index.add_packs(indexed)
        lookup = ChunkIndex()
        lookup.add_packs(indexed)
        for _, _, packs in markers:
            lookup.add_packs(packs)

        # Mark: every chunk any snapshot needs. A chunk that is nowhere means the index is incomplete: refuse.
        used: set[bytes] = set()
        missing: list[str] = []
        for number, snapshot in enumerate(repository.snapshots()):
            report.snapshots += 1
            for chunk_id, what, problem in _referenced_ids(repository, snapshot, lookup):
                if problem is not None:
                    raise PruneRefused(f"snapshot {snapshot.id}: {problem}; repair before pruning")
                if chunk_id != ZERO_ID and lookup.lookup(chunk_id) is None:
                    missing.append(f"{snapshot.id}: {what} ({chunk_id.hex()[:16]}…)")
                used.add(chunk_id)
            progress.step(number + 1, None, "marking used chunks")
        if missing:
            raise PruneRefused(
                f"{len(missing)} chunks used by snapshots are in no index (first: {missing[0]}); "
                "run rebuild-index, then prune again"
            )
        report.used_chunks = len(used)

        # Phase 2: markers whose grace period is over and that no older backup can still depend on.
        cutoff = now - grace
        ripe_markers: list[str] = []
        resurrect: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = []
        to_delete: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = []
        for key, marked_at, packs in markers:
            marked = datetime.datetime.fromtimestamp(marked_at / 1_000_000, datetime.UTC)
            blocked = any(lease.started <= marked for lease in backups)
            if marked > cutoff or blocked:
                report.waiting_packs.extend(pack.name for pack, _ in packs)
                continue
            ripe_markers.append(key)
            for pack, entries in packs:
                # Back into the index only if it holds a used chunk no indexed pack has (a repacked pack's
                # live chunks were copied out, so it can go).
                if any(
                    entry.chunk_id in used and in_index.lookup(entry.chunk_id) is None for entry in entries
                ):
                    resurrect.append((pack, entries))
                    report.resurrected_packs.append(pack.name)
                else:
                    to_delete.append((pack, entries))
                    report.deleted_packs.append(pack.name)
                    report.freed_bytes += pack.size

        # Phase 1: indexed packs no snapshot uses leave the index, into a new marker.
        keep: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = []
        newly_unused: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = []
        repack: list[tuple[fmt.IndexedPack, list[fmt.PackEntry], list[fmt.PackEntry]]] = []
        seen: set[str] = set()
        for pack, entries in indexed:
            if pack.name in seen:
                continue  # the same pack named by two index files
            seen.add(pack.name)
            live = [entry for entry in entries if entry.chunk_id in used]
            if not live:
                newly_unused.append((pack, entries))
                report.marked_packs.append(pack.name)
                continue
            unused_bytes = sum(entry.stored_length for entry in entries if entry.chunk_id not in used)
            if unused_bytes >= repack_threshold * sum(entry.stored_length for entry in entries):
                repack.append((pack, entries, live))
                report.repacked_packs.append(pack.name)
                report.marked_packs.append(pack.name)
                report.freed_bytes += unused_bytes
            else:
                keep.append((pack, entries))

        # Orphans: stored packs in no index and no marker, old enough, older than every live backup.
        known = seen | {pack.name for _, _, packs in markers for pack, _ in packs}
        oldest_backup = min((lease.started for lease in backups), default=now)
        orphan_cutoff = min(cutoff, oldest_backup)
        orphans = [
            info
            for info in storage.list(DATA)
            if info.key.rsplit("/", 1)[-1] not in known and info.modified < orphan_cutoff
        ]
        report.deleted_orphans = [info.key for info in orphans]
        report.freed_bytes += sum(info.size for info in orphans)
        if dry_run:
            return report

        # Write new state before removing old state, so a crash at any point loses nothing.
        if repack:
            # Copies first (new packs and their index file), then the old packs join the marker below.
            with repository.writer() as writer:
                for pack, entries, live in repack:
                    data = storage.get(pack_key(pack.name))
                    for entry in live:
                        blob = data[entry.offset : entry.offset + entry.stored_length]
                        what = f"chunk {entry.chunk_id.hex()} in {pack_key(pack.name)}"
                        chunk = fmt.open_chunk(repository.master, pack.salt, entry, blob, what)
                        writer.add(chunk, meta=bool(entry.flags & fmt.FLAG_META), force=True)
                    newly_unused.append((pack, entries))
                writer.flush()
        if newly_unused:
            storage.put(
                PENDING + new_object_name(),
                fmt.seal_object(
                    repository.master, fmt.KIND_PENDING, fmt.encode_pending(_microseconds(now), newly_unused)
                ),
            )
        if newly_unused or resurrect:
            written = repository.write_index_file(keep + resurrect) if keep or resurrect else None
            for key in index_keys:
                if key != written:
                    storage.delete(key)
        for pack, _ in to_delete:
            storage.delete(pack_key(pack.name))
        for info in orphans:
            storage.delete(info.key)
        # Half-written objects of killed writers (a streamed pack's temporary file), on storages that have them.
        sweep = getattr(storage, "sweep_temporaries", None)
        if sweep is not None:
            report.deleted_temporaries = sweep(DATA, orphan_cutoff)
        for key in ripe_markers:
            storage.delete(key)
        repository.forget_cached_index()
    return report
