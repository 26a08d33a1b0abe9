"""Checking and repairing a repository: verify (quick or full) and rebuild the index from the packs.

Verify never trusts a cached index: it reads the index files itself, so what it reports is what a fresh
restore would meet. Every problem names the stored object, and the chunk and snapshots it affects.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from engine import format as fmt
from engine.errors import EngineError, IntegrityError, ObjectMissing
from engine.image import TABLE_SPAN, ZERO_ID
from engine.index import ChunkIndex, Location
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


class Reference(NamedTuple):
    """One chunk a snapshot needs: its id, what it is (for messages), a problem met on the way (a table or tree
    that could not be read, a malformed manifest), and what the chunk must be: its length (blocks), and
    whether it is metadata (tables, trees) or data."""

    chunk_id: bytes
    what: str
    problem: Problem | None
    length: int | None = None
    meta: bool | None = None


def _malformed(snapshot: Snapshot, detail: str) -> Reference:
    return Reference(
        ZERO_ID, detail, Problem(ERROR, "snapshot-malformed", f"snapshots/{snapshot.id}", detail)
    )


def _read_meta(
    repository: Repository, index: ChunkIndex, chunk_id: bytes, what: str
) -> bytes | Problem | None:
    """A metadata chunk's content through `index`; None when no index has it; a Problem when it is damaged."""
    problem = None
    for location in index.lookup_all(chunk_id):  # any good copy will do (a damaged one may have been healed)
        key = pack_key(location.pack.name)
        try:
            blob = repository.storage.get(key, location.entry.offset, location.entry.stored_length)
            return fmt.open_chunk(
                repository.master, location.pack.salt, location.entry, blob, f"{what} in {key}"
            )
        except EngineError as error:
            problem = problem or Problem(ERROR, "chunk-damaged", key, str(error), chunk_id.hex())
    return problem


def _chunk_id(value: object) -> bytes | None:
    try:
        chunk_id = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        return None
    return chunk_id if len(chunk_id) == 32 else None


def _referenced_ids(
    repository: Repository, snapshot: Snapshot, index: ChunkIndex, seen: set[bytes] | None = None
) -> Iterator[Reference]:
    """Every chunk a snapshot needs; tables and trees are read through `index`. Nothing in a manifest or a tree
    is trusted: a malformed one comes as a problem, never as a crash, and the walk goes on where it can.

    `seen`: trees already walked (and not walked again: a tree shared by many folders, or a forged loop, costs
    one read). Prune passes one set for all snapshots; verify one set per snapshot."""
    seen = set() if seen is None else seen
    for disk in snapshot.disks:
        try:
            name, size, block_size = str(disk["name"]), int(disk["size"]), int(disk["block_size"])
            tables = [_chunk_id(table) for table in disk["tables"]]
        except (KeyError, TypeError, ValueError) as error:
            yield _malformed(snapshot, f"a disk entry is malformed ({error!r})")
            continue
        blocks = -(-size // block_size) if block_size > 0 and size >= 0 else -1
        if blocks < 0 or len(tables) != -(-blocks // TABLE_SPAN) or None in tables:
            yield _malformed(
                snapshot, f"disk {name}: {len(tables)} block tables do not describe {size} bytes"
            )
            continue
        for number, table_id in enumerate(tables):
            assert table_id is not None
            what = f"block table {number} of disk {name}"
            span = min(TABLE_SPAN, blocks - number * TABLE_SPAN)
            table = _read_meta(repository, index, table_id, what)
            if isinstance(table, Problem):
                yield Reference(table_id, what, table)
                continue
            yield Reference(table_id, what, None, span * 32, True)
            if table is None:
                continue  # reported as missing by the caller
            for position in range(0, len(table), 32):
                block_id = table[position : position + 32]
                if block_id != ZERO_ID:
                    block = number * TABLE_SPAN + position // 32
                    length = min(block_size, size - block * block_size)
                    yield Reference(block_id, f"block {block} of disk {name}", None, length, False)
    if snapshot.tree is not None:
        root = _chunk_id(snapshot.tree)
        if root is None:
            yield _malformed(snapshot, "the root tree is not a chunk id")
        else:
            yield from _tree_ids(repository, index, snapshot, root, seen)


def _tree_ids(
    repository: Repository, index: ChunkIndex, snapshot: Snapshot, root: bytes, seen: set[bytes]
) -> Iterator[Reference]:
    """Every chunk under a file tree: the tree chunks themselves and the files' chunks (iterative: a forged
    deep tree cannot exhaust the stack)."""
    stack = [(root, "")]
    while stack:
        tree_id, path = stack.pop()
        if tree_id in seen:
            continue
        seen.add(tree_id)
        what = f"directory {path or '/'}"
        data = _read_meta(repository, index, tree_id, what)
        if isinstance(data, Problem):
            yield Reference(tree_id, what, data)
            continue
        yield Reference(tree_id, what, None, None, True)
        if data is None:
            continue
        try:
            entries = json.loads(data)["entries"]
            if not isinstance(entries, list):
                raise TypeError("entries is not a list")
        except (ValueError, KeyError, TypeError) as error:
            yield Reference(tree_id, what, Problem(ERROR, "tree-malformed", what, str(error), tree_id.hex()))
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                yield Reference(
                    tree_id, what, Problem(ERROR, "tree-malformed", what, "an entry is not an object")
                )
                continue
            child = f"{path}/{entry.get('name')}"
            if entry.get("type") == "dir":
                subtree = _chunk_id(entry.get("tree"))
                if subtree is None:
                    yield Reference(
                        tree_id,
                        what,
                        Problem(ERROR, "tree-malformed", child, "a folder without a valid tree id"),
                    )
                    continue
                stack.append((subtree, child))
            elif entry.get("type") == "file":
                chunks = entry.get("chunks", [])
                for number, chunk_hex in enumerate(chunks if isinstance(chunks, list) else [None]):
                    chunk_id = _chunk_id(chunk_hex)
                    if chunk_id is None:
                        yield Reference(
                            tree_id,
                            what,
                            Problem(ERROR, "tree-malformed", child, f"chunk {number} is not an id"),
                        )
                        continue
                    yield Reference(chunk_id, f"chunk {number} of file {child}", None, None, False)


def verify(
    repository: Repository,
    *,
    full: bool = False,
    sample: float | None = None,
    progress: Progress | None = None,
    record: bool = False,
) -> VerifyReport:
    """Quick: index files, manifests, every referenced chunk indexed, every indexed pack present with its size.
    Full (or a random `sample` fraction of packs): also re-read packs and check every tag, every id, and every
    index entry against its pack's header.

    A chunk is fine when any copy of it is good: a damaged copy whose chunk a later backup stored again is
    reported as healed (a notice), not as damage. With `record`, the damaged and missing copies found are
    written down, so the next backup that meets those chunks stores them again instead of deduplicating
    against a copy that cannot be read."""
    progress = progress or NullProgress()
    report = VerifyReport(full=full or sample is not None)
    index = _load_index(repository, report)
    recorded = {pair for _, pairs in repository.read_damaged() for pair in pairs}
    stored = {info.key: info.size for info in repository.storage.list(DATA)}
    placed: dict[str, list[Location]] = {}
    for location in index.locations():
        placed.setdefault(location.pack.name, []).append(location)
    bad_packs: dict[str, Problem] = {}
    for pack in index.packs:
        key = pack_key(pack.name)
        if key not in stored:
            bad_packs[pack.name] = Problem(ERROR, "missing-pack", key, "indexed pack is not in storage")
        elif stored[key] != pack.size:
            detail = f"{stored[key]} bytes stored, {pack.size} indexed (truncated?)"
            bad_packs[pack.name] = Problem(ERROR, "pack-size", key, detail)
    for key in stored:
        if key.rsplit("/", 1)[-1] not in placed:
            report.problems.append(
                Problem(NOTICE, "unindexed-pack", key, "no index names it (interrupted backup?)")
            )
    report.packs = len(stored)
    temporaries = getattr(repository.storage, "temporaries", None)
    if temporaries is not None:
        left = temporaries(DATA)
        if left:
            report.problems.append(
                Problem(
                    NOTICE,
                    "temporary-files",
                    DATA,
                    f"{len(left)} temporary pack file(s), {sum(i.size for i in left) / 1e6:.1f} MB: being written, "
                    "or left by a killed backup (prune removes those older than its grace period)",
                )
            )

    damaged: dict[tuple[bytes, str], Problem] = {}
    broken: dict[str, Problem] = {}  # packs whose header cannot be read
    if report.full:
        keys = sorted(key for key in stored if key.rsplit("/", 1)[-1] not in bad_packs)
        if sample is not None:
            keys = random.sample(keys, max(1, round(len(keys) * sample))) if keys else []
        for number, key in enumerate(keys):
            name = key.rsplit("/", 1)[-1]
            _verify_pack(repository, key, report, damaged, broken, placed.get(name))
            progress.step(number + 1, len(keys), "reading packs")

    def fault(chunk_id: bytes, location: Location) -> Problem | None:
        name = location.pack.name
        if name in bad_packs:
            pack = bad_packs[name]
            return Problem(
                ERROR, "chunk-unreachable", pack.object, f"it sits in a pack: {pack.detail}", chunk_id.hex()
            )
        if (chunk_id, name) in damaged:
            return damaged[(chunk_id, name)]
        if (chunk_id, name) in recorded:
            detail = "recorded as damaged by an earlier verify"
            return Problem(ERROR, "chunk-damaged", pack_key(name), detail, chunk_id.hex())
        return None

    def good_copy(chunk_id: bytes) -> Location | None:
        return next((c for c in index.lookup_all(chunk_id) if fault(chunk_id, c) is None), None)

    # Walk the snapshots last, so each problem can name the snapshots it affects.
    affected: dict[tuple[str, str, str, str | None], list[str]] = {}
    for snapshot_id in repository.snapshot_ids():
        report.snapshots += 1
        try:
            snapshot = repository.load_snapshot(snapshot_id)
            for chunk_id, what, problem, length, meta in _referenced_ids(repository, snapshot, index):
                copies = index.lookup_all(chunk_id) if problem is None else []
                good = good_copy(chunk_id) if copies else None
                if problem is not None:
                    problem_key = (problem.kind, problem.object, problem.detail, problem.chunk)
                elif not copies:
                    problem_key = (
                        "missing-chunk",
                        f"snapshot {snapshot_id}",
                        f"{what} is in no index",
                        chunk_id.hex(),
                    )
                elif good is None:
                    first = fault(chunk_id, copies[0])
                    assert first is not None
                    problem_key = (first.kind, first.object, f"{what}: {first.detail}", chunk_id.hex())
                elif length is not None and good.entry.raw_length != length:
                    problem_key = (
                        "chunk-mismatch",
                        f"snapshot {snapshot_id}",
                        f"{what} must hold {length} bytes; the chunk it names holds {good.entry.raw_length}",
                        chunk_id.hex(),
                    )
                elif meta is not None and bool(good.entry.flags & fmt.FLAG_META) != meta:
                    expected = "metadata (a block table or a tree)" if meta else "data"
                    problem_key = (
                        "chunk-mismatch",
                        f"snapshot {snapshot_id}",
                        f"{what} must be {expected}; the chunk it names is not",
                        chunk_id.hex(),
                    )
                else:
                    continue
                affected.setdefault(problem_key, []).append(snapshot_id)
        except (EngineError, ValueError, TypeError, KeyError) as error:  # a forged manifest, not a crash
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

    # The damaged objects themselves: harmless (a notice) once every chunk in them has a good copy elsewhere.
    for name, problem in {**bad_packs, **broken}.items():
        lost = [loc for loc in placed.get(name, []) if good_copy(loc.entry.chunk_id) is None]
        if lost:
            report.problems.append(problem)
        else:
            healed = f"{problem.detail}; every chunk in it has a good copy elsewhere (healed)"
            report.problems.append(Problem(NOTICE, problem.kind, problem.object, healed))
    reported = {(p.kind, p.chunk) for p in report.problems}
    for (chunk_id, name), problem in damaged.items():
        if name in broken:
            continue  # said once for the whole pack above
        if good_copy(chunk_id) is not None:
            detail = f"{problem.detail}; a good copy exists elsewhere (healed)"
            report.problems.append(Problem(NOTICE, problem.kind, problem.object, detail, problem.chunk))
        elif (problem.kind, chunk_id.hex()) not in reported:
            report.problems.append(problem)  # damaged but used by no snapshot: still worth knowing
    if record:
        found = set(damaged) | {
            (loc.entry.chunk_id, name) for name in bad_packs for loc in placed.get(name, [])
        }
        repository.record_damaged(found)
    return report


def _verify_pack(
    repository: Repository,
    key: str,
    report: VerifyReport,
    damaged: dict[tuple[bytes, str], Problem],
    broken: dict[str, Problem],
    placed: list[Location] | None,
) -> None:
    """Re-read one pack: header, every chunk's tag and id, and every index entry that places a chunk here
    against the header (`placed`: those entries; none for a pack no index names). Problems go into `damaged`
    by (chunk id, pack name)."""
    name = key.rsplit("/", 1)[-1]
    try:
        data = repository.storage.get(key)
    except ObjectMissing:
        return  # deleted by a prune since the listing
    report.bytes_read += len(data)
    try:
        salt, entries = fmt.read_pack_header(repository.master, data, key)
    except IntegrityError as error:
        if not placed:
            # In no index: debris of a write that failed (a killed backup, a storage that lost it). No
            # snapshot can use it; prune removes it after the grace period.
            report.problems.append(Problem(NOTICE, "unindexed-pack", key, f"unreadable debris: {error}"))
            return
        broken[name] = Problem(ERROR, "pack-damaged", key, str(error))
        for location in placed:  # every chunk the index places here is now unreadable
            chunk = location.entry.chunk_id
            damaged[(chunk, name)] = Problem(ERROR, "pack-damaged", key, str(error), chunk.hex())
        return
    for entry in entries:
        report.chunks_checked += 1
        blob = data[entry.offset : entry.offset + entry.stored_length]
        try:
            fmt.open_chunk(repository.master, salt, entry, blob, f"chunk {entry.chunk_id.hex()} in {key}")
        except IntegrityError as error:
            damaged[(entry.chunk_id, name)] = Problem(
                ERROR, "chunk-damaged", key, str(error), entry.chunk_id.hex()
            )
    listed = {entry.chunk_id: entry for entry in entries}
    for location in placed or []:
        # An index entry must say what the pack's own header says: else a restore reads the wrong bytes (or
        # none) while the pack itself checks out.
        if listed.get(location.entry.chunk_id) != location.entry:
            detail = (
                "the index places this chunk here, but the pack's header does not list it"
                if location.entry.chunk_id not in listed
                else "the index places this chunk elsewhere in the pack than its header does"
            )
            problem = Problem(ERROR, "index-mismatch", key, detail, location.entry.chunk_id.hex())
            damaged.setdefault((location.entry.chunk_id, name), problem)


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
