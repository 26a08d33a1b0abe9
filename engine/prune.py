"""Forget snapshots by retention and prune the data no snapshot uses, safely beside running backups.

Prune works in two phases ("fossil collection"):
1. Packs whose chunks no snapshot uses are listed in a sealed pending marker (pending/<name>), then taken out of
   the index; once no index file names them the marker is stamped *complete* on the storage's clock. From that
   moment no backup that takes its lease can deduplicate against them (writers take their lease before they
   read the index, and reload it whole when an index file they knew has gone).
2. A later prune deletes a marked pack only when the grace period has passed since the completion stamp and no
   live backup lease began before it; if a snapshot committed meanwhile uses one of its chunks, the pack goes
   back into the index instead. Readers find marked packs through the marker.
Unindexed packs (left by killed backups) are deleted once older than the grace period and older than every
live backup lease. Every step is ordered so that a kill at any instant loses nothing a snapshot needs, and
leaves a repository that verify finds consistent.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from engine import format as fmt
from engine.errors import EngineError, ObjectMissing
from engine.image import ZERO_ID
from engine.index import ChunkIndex
from engine.locks import LeaseHolder, live_leases
from engine.maintenance import _referenced_ids
from engine.progress import NullProgress, Progress
from engine.repository import DATA, INDEX, PENDING, Repository, new_object_name, pack_key
from engine.retention import Decision, RetentionSpec, plan_retention

DEFAULT_GRACE = datetime.timedelta(hours=2)
# Lease start times, marker stamps and object modification times come from clocks of different resolution
# (microseconds; a file system's coarse clock, ~4 ms; S3's whole seconds): compared with this margin.
CLOCK_MARGIN = datetime.timedelta(seconds=2)
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


def _moment(microseconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(microseconds / 1_000_000, datetime.UTC)


Packs = list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]]


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
        # Snapshots are listed before the index files are read: a snapshot's index file is written before its
        # manifest, so every snapshot listed here finds its chunks in the index read next. One committed
        # later is protected by its writer's lease, which began before anything here is set aside.
        snapshot_ids = repository.snapshot_ids()

        index_keys = [info.key for info in storage.list(INDEX)]
        indexed: Packs = []
        for key in index_keys:
            try:
                indexed.extend(repository.read_index_file(key))
            except EngineError as error:
                raise PruneRefused(
                    f"index file {key} is unreadable ({error}); run rebuild-index first"
                ) from None
        try:
            markers = repository.read_pending()
        except EngineError as error:
            raise PruneRefused(f"a pending marker is unreadable ({error}); nothing was pruned") from None
        marked_names = {pack.name for _, marker in markers for pack, _ in marker.packs}
        # The live index: indexed packs not set aside (a pack in a marker and an index file is what a prune
        # killed half-way leaves; this prune finishes taking it out).
        live: Packs = []
        seen: set[str] = set()
        for pack, entries in indexed:
            if pack.name not in seen and pack.name not in marked_names:
                seen.add(pack.name)
                live.append((pack, entries))
        in_index = ChunkIndex()
        in_index.add_packs(live)
        # Copies verify found damaged: one whose chunk has a good copy elsewhere is garbage (the chunk was
        # healed by a later backup); one without stays, as the only trace of what was lost.
        records = repository.read_damaged()
        damaged = {pair for _, pairs in records for pair in pairs}

        def healed(chunk_id: bytes, pack_name: str) -> bool:
            return (chunk_id, pack_name) in damaged and any(
                other.pack.name != pack_name and (chunk_id, other.pack.name) not in damaged
                for other in in_index.lookup_all(chunk_id)
            )

        lookup = ChunkIndex()
        lookup.add_packs(live)
        for _, marker in markers:
            lookup.add_packs(marker.packs)

        # Mark: every chunk any snapshot needs. A chunk that is nowhere means the index is incomplete: refuse.
        used: set[bytes] = set()
        walked: set[bytes] = set()
        missing: list[str] = []
        for number, snapshot_id in enumerate(snapshot_ids):
            try:
                snapshot = repository.load_snapshot(snapshot_id)
            except ObjectMissing:
                continue  # forgotten since the listing
            except EngineError as error:
                raise PruneRefused(
                    f"snapshot {snapshot_id} is unreadable ({error}): what it uses is unknown, so nothing was "
                    f"pruned; 'forget {snapshot_id}' removes it"
                ) from None
            report.snapshots += 1
            # Trees walked once over all snapshots: a tree shared by many snapshots is read once.
            for reference in _referenced_ids(repository, snapshot, lookup, walked):
                if reference.problem is not None:
                    raise PruneRefused(f"snapshot {snapshot.id}: {reference.problem}; repair before pruning")
                chunk_id = reference.chunk_id
                if chunk_id != ZERO_ID and lookup.lookup(chunk_id) is None:
                    missing.append(f"{snapshot.id}: {reference.what} ({chunk_id.hex()[:16]}…)")
                used.add(chunk_id)
            progress.step(number + 1, None, "marking used chunks")
        if missing:
            raise PruneRefused(
                f"{len(missing)} chunks used by snapshots are in no index (first: {missing[0]}); "
                "run rebuild-index, then prune again"
            )
        report.used_chunks = len(used)

        # Phase 2: markers complete for longer than the grace period, that no backup can still depend on (one
        # whose lease began before the marker's packs left the last index file may have deduplicated
        # against them). Compared with a margin: lease times and object times come from clocks of differing
        # resolution.
        cutoff = now - grace
        ripe_markers: list[str] = []
        unfinished: list[tuple[str, fmt.PendingMarker]] = []
        resurrect: Packs = []
        to_delete: Packs = []
        for key, marker in markers:
            if not marker.completed_at:
                unfinished.append((key, marker))  # a prune was killed before it took them out: finish below
                report.waiting_packs.extend(pack.name for pack, _ in marker.packs)
                continue
            completed = _moment(marker.completed_at)
            blocked = any(lease.started <= completed + CLOCK_MARGIN for lease in backups)
            if completed > cutoff or blocked:
                report.waiting_packs.extend(pack.name for pack, _ in marker.packs)
                continue
            ripe_markers.append(key)
            for pack, entries in marker.packs:
                # Back into the index if it holds a used chunk that no live pack has (a snapshot committed
                # meanwhile uses it); a repacked pack's live chunks were copied out, so it can go.
                if any(
                    entry.chunk_id in used and in_index.lookup(entry.chunk_id) is None for entry in entries
                ):
                    resurrect.append((pack, entries))
                    report.resurrected_packs.append(pack.name)
                else:
                    to_delete.append((pack, entries))
                    report.deleted_packs.append(pack.name)
                    report.freed_bytes += pack.size

        # Phase 1: live packs no snapshot uses leave the index, into a new marker.
        keep: Packs = []
        newly_unused: Packs = []
        repack: list[tuple[fmt.IndexedPack, list[fmt.PackEntry], list[fmt.PackEntry]]] = []
        for pack, entries in live:
            live_entries = [
                entry for entry in entries if entry.chunk_id in used and not healed(entry.chunk_id, pack.name)
            ]
            if not live_entries:
                newly_unused.append((pack, entries))
                report.marked_packs.append(pack.name)
                continue
            unused_bytes = sum(entry.stored_length for entry in entries) - sum(
                entry.stored_length for entry in live_entries
            )
            unreadable = any((entry.chunk_id, pack.name) in damaged for entry in live_entries)
            if not unreadable and unused_bytes >= repack_threshold * sum(
                entry.stored_length for entry in entries
            ):
                repack.append((pack, entries, live_entries))
                report.repacked_packs.append(pack.name)
                report.marked_packs.append(pack.name)
                report.freed_bytes += unused_bytes
            else:
                keep.append((pack, entries))

        # Orphans: stored packs in no index and no marker, older than the grace period and than every live
        # backup (whose packs are stored before the index file naming them).
        known = {pack.name for pack, _ in indexed} | marked_names
        oldest_backup = min((lease.started for lease in backups), default=now)
        orphan_cutoff = min(cutoff, oldest_backup) - CLOCK_MARGIN
        orphans = [
            info
            for info in storage.list(DATA)
            if info.key.rsplit("/", 1)[-1] not in known and info.modified < orphan_cutoff
        ]
        report.deleted_orphans = [info.key for info in orphans]
        report.freed_bytes += sum(info.size for info in orphans)
        if dry_run:
            return report

        # New state is written before old state is removed, so a kill at any point loses nothing and leaves
        # a repository that verify finds consistent.
        if repack:
            # Copies first (new packs and their own index file), then the old packs join the marker below.
            with repository.writer() as writer:
                for pack, entries, live_entries in repack:
                    data = storage.get(pack_key(pack.name))
                    for entry in live_entries:
                        blob = data[entry.offset : entry.offset + entry.stored_length]
                        what = f"chunk {entry.chunk_id.hex()} in {pack_key(pack.name)}"
                        chunk = fmt.open_chunk(repository.master, pack.salt, entry, blob, what)
                        writer.add(chunk, meta=bool(entry.flags & fmt.FLAG_META), force=True)
                    newly_unused.append((pack, entries))
                writer.flush()
        if newly_unused:
            key = PENDING + new_object_name()
            marker = fmt.PendingMarker(_microseconds(now), 0, newly_unused)
            repository.write_pending(key, marker)  # first: the packs stay findable for readers
            unfinished.append((key, marker))
        stale_index = any(pack.name in marked_names for pack, _ in indexed) or len(seen) < len(indexed)
        if unfinished or resurrect or stale_index:
            written = repository.write_index_file(keep + resurrect) if keep or resurrect else None
            for key in index_keys:
                if key != written:
                    storage.delete(key)
        # No index file names the set-aside packs any more: from this moment no new backup can deduplicate
        # against them, which is what the completion stamp records.
        if unfinished:
            completed_at = _microseconds(storage.now())
            for key, marker in unfinished:
                repository.write_pending(key, fmt.PendingMarker(marker.marked_at, completed_at, marker.packs))
        # Ripe markers go before their packs: a kill in between leaves unindexed packs (orphans, removed by
        # the next prune), never a marker that names a deleted pack.
        for key in ripe_markers:
            storage.delete(key)
        for pack, _ in to_delete:
            storage.delete(pack_key(pack.name))
        for info in orphans:
            storage.delete(info.key)
        # Damage records keep only copies that are still stored.
        gone = {pack.name for pack, _ in to_delete} | {info.key.rsplit("/", 1)[-1] for info in orphans}
        if records and any(name in gone for _, name in damaged):
            remaining = sorted(pair for pair in damaged if pair[1] not in gone)
            if remaining:  # the survivors first, then the old records: a kill in between repeats some
                repository.write_damaged(remaining)
            for key, _ in records:
                storage.delete(key)
        # Half-written objects of killed writers (a streamed pack's temporary file), on storages that have them.
        sweep = getattr(storage, "sweep_temporaries", None)
        if sweep is not None:
            report.deleted_temporaries = sweep(DATA, orphan_cutoff)
        repository.forget_cached_index()
    return report
