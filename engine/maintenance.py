"""Checking and repairing a repository: verify (quick or full) and rebuild the index from the packs.

Verify never trusts a cached index: it reads the index files itself, so what it reports is what a fresh
restore would meet. Every problem names the stored object, and the chunk and snapshots it affects.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine import format as fmt
from engine.errors import EngineError, IntegrityError, ObjectMissing
from engine.image import ZERO_ID
from engine.index import ChunkIndex
from engine.locks import LeaseHolder
from engine.progress import NullProgress, Progress
from engine.repository import DATA, INDEX, Repository, Snapshot, pack_key

ERROR = "error"
NOTICE = "notice"  # consistent but untidy (e.g. packs left by an interrupted backup)


@dataclass(frozen=True)
class Problem:
    severity: str
    kind: str
    object: str
    detail: str
    chunk: str | None = None
    snapshots: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [f"{self.severity}: {self.kind}: {self.object}: {self.detail}"]
        if self.chunk:
            parts.append(f"chunk {self.chunk}")
        if self.snapshots:
            parts.append(f"affects snapshots {', '.join(self.snapshots)}")
        return "; ".join(parts)


@dataclass
class VerifyReport:
    full: bool
    problems: list[Problem] = field(default_factory=list)
    snapshots: int = 0
    packs: int = 0
    chunks_checked: int = 0
    bytes_read: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == ERROR]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def damaged_snapshots(self) -> set[str]:
        return {snapshot for problem in self.errors for snapshot in problem.snapshots}


def _load_index(repository: Repository, report: VerifyReport) -> ChunkIndex:
    """Index files plus prune's pending markers: packs set aside but not deleted still hold valid data."""
    index = ChunkIndex()
    for info in repository.storage.list(INDEX):
        try:
            index.add_packs(repository.read_index_file(info.key))
        except (IntegrityError, ObjectMissing) as error:
            report.problems.append(Problem(ERROR, "index-unreadable", info.key, str(error)))
    try:
        for key, marker in repository.read_pending():
            index.add_packs(marker.packs)
            for pack, _ in marker.packs:
                report.problems.append(
                    Problem(NOTICE, "pending-deletion", pack_key(pack.name), f"set aside by prune ({key})")
                )
    except (IntegrityError, ObjectMissing) as error:
        report.problems.append(Problem(ERROR, "pending-unreadable", "pending/", str(error)))
    return index


def _referenced_ids(
    repository: Repository, snapshot: Snapshot, index: ChunkIndex
) -> Iterable[tuple[bytes, str, Problem | None]]:
    """(chunk id, what it is, problem) for every chunk a snapshot needs; tables are read through `index`.

    A table that cannot be read comes with a problem naming its pack; the walk goes on with the next table."""
    for disk in snapshot.disks:
        for table_hex in disk["tables"]:
            table_id = bytes.fromhex(table_hex)
            what = f"block table of disk {disk['name']}"
            location = index.lookup(table_id)
            if location is None:
                yield table_id, what, None  # reported as missing by the caller
                continue
            key = pack_key(location.pack.name)
            try:
                blob = repository.storage.get(key, location.entry.offset, location.entry.stored_length)
                table = fmt.open_chunk(
                    repository.master, location.pack.salt, location.entry, blob, f"{what} in {key}"
                )
            except EngineError as error:
                yield table_id, what, Problem(ERROR, "chunk-damaged", key, str(error), table_hex)
                continue
            yield table_id, what, None
            for position in range(0, len(table), 32):
                block_id = table[position : position + 32]
                if block_id != ZERO_ID:
                    yield block_id, f"block {position // 32} of disk {disk['name']}", None
    if snapshot.tree is not None:
        yield from _tree_ids(repository, index, snapshot.tree, "")


def _tree_ids(
    repository: Repository, index: ChunkIndex, tree_hex: str, path: str
) -> Iterable[tuple[bytes, str, Problem | None]]:
    """Every chunk under a file tree: the tree chunks themselves and the files' chunks."""
    tree_id = bytes.fromhex(tree_hex)
    what = f"directory {path or '/'}"
    location = index.lookup(tree_id)
    if location is None:
        yield tree_id, what, None
        return
    key = pack_key(location.pack.name)
    try:
        blob = repository.storage.get(key, location.entry.offset, location.entry.stored_length)
        data = fmt.open_chunk(repository.master, location.pack.salt, location.entry, blob, f"{what} in {key}")
        entries = json.loads(data)["entries"]
    except (EngineError, ValueError, KeyError) as error:
        yield tree_id, what, Problem(ERROR, "chunk-damaged", key, str(error), tree_hex)
        return
    yield tree_id, what, None
    for entry in entries:
        child = f"{path}/{entry.get('name')}"
        if entry.get("type") == "dir":
            yield from _tree_ids(repository, index, entry["tree"], child)
        elif entry.get("type") == "file":
            for number, chunk_hex in enumerate(entry.get("chunks", [])):
                yield bytes.fromhex(chunk_hex), f"chunk {number} of file {child}", None


def verify(
    repository: Repository,
    *,
    full: bool = False,
    sample: float | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Quick: index files, manifests, every referenced chunk indexed, every indexed pack present with its size.
    Full (or a random `sample` fraction of packs): also re-read packs and check every tag and every id."""
    progress = progress or NullProgress()
    report = VerifyReport(full=full or sample is not None)
    index = _load_index(repository, report)
    stored = {info.key: info.size for info in repository.storage.list(DATA)}
    bad_packs: dict[str, str] = {}
    for pack in index.packs:
        key = pack_key(pack.name)
        if key not in stored:
            bad_packs[pack.name] = "missing"
            report.problems.append(Problem(ERROR, "missing-pack", key, "indexed pack is not in storage"))
        elif stored[key] != pack.size:
            bad_packs[pack.name] = "wrong size"
            report.problems.append(
                Problem(
                    ERROR, "pack-size", key, f"{stored[key]} bytes stored, {pack.size} indexed (truncated?)"
                )
            )
    indexed_names = {pack.name for pack in index.packs}
    for key in stored:
        if key.rsplit("/", 1)[-1] not in indexed_names:
            report.problems.append(
                Problem(NOTICE, "unindexed-pack", key, "no index names it (interrupted backup?)")
            )
    report.packs = len(stored)

    damaged_chunks: dict[bytes, Problem] = {}
    if report.full:
        keys = sorted(stored)
        if sample is not None:
            keys = random.sample(keys, max(1, round(len(keys) * sample))) if keys else []
        for number, key in enumerate(keys):
            _verify_pack(repository, key, index, report, damaged_chunks)
            progress.step(number + 1, len(keys), "reading packs")

    # Walk the snapshots last, so each problem can name the snapshots it affects.
    affected: dict[tuple[str, str, str, str | None], list[str]] = {}
    for snapshot_id in repository.snapshot_ids():
        report.snapshots += 1
        try:
            snapshot = repository.load_snapshot(snapshot_id)
            for chunk_id, what, problem in _referenced_ids(repository, snapshot, index):
                location = index.lookup(chunk_id)
                if problem is not None:
                    problem_key = (problem.kind, problem.object, problem.detail, chunk_id.hex())
                elif location is None:
                    problem_key = (
                        "missing-chunk",
                        f"snapshot {snapshot_id}",
                        f"{what} is in no index",
                        chunk_id.hex(),
                    )
                elif location.pack.name in bad_packs:
                    problem_key = (
                        "chunk-unreachable",
                        pack_key(location.pack.name),
                        f"{what} sits in a pack that is {bad_packs[location.pack.name]}",
                        chunk_id.hex(),
                    )
                elif chunk_id in damaged_chunks:
                    problem = damaged_chunks[chunk_id]
                    problem_key = (problem.kind, problem.object, problem.detail, chunk_id.hex())
                else:
                    continue
                affected.setdefault(problem_key, []).append(snapshot_id)
        except EngineError as error:
            report.problems.append(
                Problem(
                    ERROR,
                    "snapshot-unreadable",
                    f"snapshots/{snapshot_id}",
                    str(error),
                    snapshots=(snapshot_id,),
                )
            )
    for (kind, obj, detail, chunk), snapshots in affected.items():
        report.problems.append(Problem(ERROR, kind, obj, detail, chunk, tuple(sorted(set(snapshots)))))
    reported = {(p.kind, p.chunk) for p in report.problems}
    for chunk_id, problem in damaged_chunks.items():
        if (problem.kind, chunk_id.hex()) not in reported:
            report.problems.append(problem)  # damaged but used by no snapshot: still worth knowing
    return report


def _verify_pack(
    repository: Repository, key: str, index: ChunkIndex, report: VerifyReport, damaged: dict[bytes, Problem]
) -> None:
    try:
        data = repository.storage.get(key)
    except ObjectMissing as error:
        report.problems.append(Problem(ERROR, "missing-pack", key, str(error)))
        return
    report.bytes_read += len(data)
    try:
        salt, entries = fmt.read_pack_header(repository.master, data, key)
    except IntegrityError as error:
        name = key.rsplit("/", 1)[-1]
        if not any(pack.name == name for pack in index.packs):
            # In no index: debris of a write that failed (a killed backup, a storage that lost it). No
            # snapshot can use it; prune removes it after the grace period.
            report.problems.append(Problem(NOTICE, "unindexed-pack", key, f"unreadable debris: {error}"))
            return
        report.problems.append(Problem(ERROR, "pack-damaged", key, str(error)))
        # Every chunk the index places here is now unreadable.
        name = key.rsplit("/", 1)[-1]
        for location in index.locations():
            if location.pack.name == name:
                damaged[location.entry.chunk_id] = Problem(
                    ERROR, "pack-damaged", key, str(error), location.entry.chunk_id.hex()
                )
        return
    for entry in entries:
        report.chunks_checked += 1
        blob = data[entry.offset : entry.offset + entry.stored_length]
        try:
            fmt.open_chunk(repository.master, salt, entry, blob, f"chunk {entry.chunk_id.hex()} in {key}")
        except IntegrityError as error:
            damaged[entry.chunk_id] = Problem(ERROR, "chunk-damaged", key, str(error), entry.chunk_id.hex())
            continue
        indexed = index.lookup(entry.chunk_id)
        if indexed is not None and indexed.pack.name == key.rsplit("/", 1)[-1] and indexed.entry != entry:
            report.problems.append(
                Problem(
                    ERROR,
                    "index-mismatch",
                    key,
                    "the index places this chunk elsewhere in the pack",
                    entry.chunk_id.hex(),
                )
            )


@dataclass
class RebuildReport:
    packs_indexed: int = 0
    chunks_indexed: int = 0
    unreadable_packs: list[str] = field(default_factory=list)
    carried_over_chunks: int = 0  # of packs whose header is unreadable, kept from the old index files
    set_aside_packs: int = 0  # in prune's pending markers: left out, prune decides about them
    # Unreadable old index files, not removed: their entries are unknown.
    kept_index_files: list[str] = field(default_factory=list)
    index_files_written: int = 0
    index_files_removed: int = 0


def rebuild_index(
    repository: Repository, *, progress: Progress | None = None, batch: int = 1000
) -> RebuildReport:
    """Write a fresh index from the packs' own headers and the old index files, then remove the old files.

    What either proves is kept: a pack whose header cannot be read keeps the entries the old index files gave
    it (each chunk is still checked when read). Packs prune has set aside stay out (putting them back would
    let a backup deduplicate against a pack prune is about to delete). An old index file that cannot be read
    is not removed while any pack lacks a readable header: its entries might be the only record of them.
    New files are written before old ones are removed, so a kill in between leaves both (harmless). Runs
    under the prune lease: never beside a prune."""
    progress = progress or NullProgress()
    report = RebuildReport()
    with LeaseHolder(repository.storage, "prune", exclusive=True):
        old_keys = [info.key for info in repository.storage.list(INDEX)]
        old_entries: dict[str, tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = {}
        unreadable_index: list[str] = []
        for key in old_keys:
            try:
                for pack, entries in repository.read_index_file(key):
                    known = old_entries.setdefault(pack.name, (pack, []))
                    known[1].extend(entries)
            except (IntegrityError, ObjectMissing):
                unreadable_index.append(key)
        set_aside = {pack.name for _, marker in repository.read_pending() for pack, _ in marker.packs}
        keys = sorted(info.key for info in repository.storage.list(DATA))
        pending: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = []
        written: list[str] = []
        for number, key in enumerate(keys):
            name = key.rsplit("/", 1)[-1]
            if name in set_aside:
                report.set_aside_packs += 1
                continue
            try:
                data = repository.storage.get(key)
                salt, entries = fmt.read_pack_header(repository.master, data, key)
                pending.append((fmt.IndexedPack(name, salt, len(data)), entries))
            except (IntegrityError, ObjectMissing):
                report.unreadable_packs.append(key)
                if name not in old_entries:
                    continue
                pack, entries = old_entries[name]
                unique = list({entry.chunk_id: entry for entry in entries}.values())
                pending.append((pack, unique))
                report.carried_over_chunks += len(unique)
                entries = unique
            report.packs_indexed += 1
            report.chunks_indexed += len(entries)
            if len(pending) >= batch:
                written.append(repository.write_index_file(pending))
                pending = []
            progress.step(number + 1, len(keys), "reading pack headers")
        if pending:
            written.append(repository.write_index_file(pending))
        report.index_files_written = len(written)
        keep_unreadable = bool(report.unreadable_packs)
        for key in old_keys:
            if key in written or (keep_unreadable and key in unreadable_index):
                if key in unreadable_index:
                    report.kept_index_files.append(key)
                continue
            repository.storage.delete(key)
            report.index_files_removed += 1
        repository.forget_cached_index()
    return report
