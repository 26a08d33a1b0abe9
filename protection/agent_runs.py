"""Agent backups: the agent reads, chunks and hashes at the source; the console checks and stores.

The agent runs the engine's chunking (FastCDC for files, fixed blocks for volumes) and keyed BLAKE3 ids with the
repository's chunk-id key (never its encryption key). With source-side dedup it asks which ids the repository
lacks and sends only those; otherwise it sends every chunk and the console deduplicates. Each chunk's id is
recomputed here from its content, so an agent can never store data under a false id (no dedup poisoning), and a
snapshot is committed only once every chunk it names is in a pack confirmed stored.

Calls, all authenticated by the agent key and scoped to the agent's own machine:
- `jobs`: queued backup runs and file restores of this machine;
- `start`: claim the run (queued → running) and receive the job;
- `missing`, `store_chunks`, `progress`: the transfer; every call renews the run's heartbeat and (once a minute)
  its repository lease, so a prune never deletes what the agent uploaded before its commit;
- `commit`: write the snapshot manifest (files: a root tree; volumes: block tables), once per kind;
- `finish`: the run ends committed, or failed with the agent's reason (its pre-script failed, a path vanished).

A dropped connection is retried by the agent; every call is idempotent (start returns the same job to the agent
already running it, uploads skip chunks already stored, a commit of a kind already committed returns that point).
An agent killed mid-run stops renewing its heartbeat: the reaper fails the run, and the next run reuses every
chunk already stored.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import zstandard
from django.db import transaction
from django.utils import timezone

from catalog import repositories
from catalog.choices import PointKind
from catalog.models import RecoveryPoint
from catalog.services import record_point
from engine.errors import EngineError, UnsafePath
from engine.files import AVERAGE_CHUNK, MAX_CHUNK, MIN_CHUNK, TREE_VERSION, read_tree
from engine.image import TABLE_SPAN, ZERO_ID
from engine.locks import drop_lease, renew_lease
from engine.repository import Repository as EngineRepository
from engine.repository import Snapshot, new_snapshot_id, now_utc
from inventory.models import Agent
from protection.choices import BackupMode, DedupLocation, RunState
from protection.models import BackupRun
from protection.progress import report

# One upload frame: flags, chunk id, payload length, payload (zstd-compressed when FLAG_ZSTD).
FRAME = struct.Struct("!B32sI")
FLAG_META = 1
FLAG_ZSTD = 2
# A chunk is at most MAX_CHUNK bytes, a block table TABLE_SPAN ids; a directory's tree may be larger.
MAX_CHUNK_BYTES = 64 * 1024 * 1024
MAX_IDS_PER_QUERY = 20_000
# The agent sends at most this many bytes of chunks per request.
BATCH_BYTES = 16 * 1024 * 1024


# Uploaded chunks are decompressed and checked against their ids on these threads.
_verifiers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")
_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:  # one per thread: they are not thread-safe
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


class AgentJobError(Exception):
    """The call cannot be honoured; `status` is the HTTP status, `code` a word the agent acts on."""

    def __init__(self, message: str, *, status: int = 409, code: str = "refused", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def jobs_for(agent: Agent) -> list[dict[str, Any]]:
    from restores.models import RestoreKind, RestoreRequest, RestoreState

    runs = BackupRun.objects.filter(
        machine=agent.machine,
        state__in=[RunState.QUEUED, RunState.WAITING],
        cancel_requested=False,
        policy__mode=BackupMode.AGENT,
    ).order_by("queued_at")
    restores = RestoreRequest.objects.filter(
        machine=agent.machine, kind=RestoreKind.FILES_TO_AGENT, state=RestoreState.QUEUED
    ).order_by("created_at")
    return [{"type": "backup", "run": run.pk} for run in runs] + [
        {"type": "restore", "restore": restore.pk} for restore in restores
    ]


def _engine(run: BackupRun) -> EngineRepository:
    """The run's repository with a view of the index taken *after* the run's lease was renewed: what it says
    is stored stays stored until the run ends (prune deletes nothing set aside after a live lease began)."""
    engine = repositories.open_repository(run.repository, refresh=False)
    _touch(run, engine)
    engine.refresh_index()
    return engine


_renewed: dict[str, float] = {}  # lease -> when this process last renewed it (monotonic)
RENEW_EVERY = 60.0  # seconds; a lease lasts LEASE_SECONDS (300) from its last renewal


def _touch(run: BackupRun, engine: EngineRepository | None = None) -> None:
    """A sign of life: the run's heartbeat, and its repository lease (written at most once a minute per process:
    each write is a stored object, fsync included)."""
    BackupRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
    now = time.monotonic()
    if run.lease and now - _renewed.get(run.lease, -RENEW_EVERY) >= RENEW_EVERY:
        storage = (engine or repositories.open_repository(run.repository, refresh=False)).storage
        renew_lease(storage, run.lease, "backup")
        _renewed[run.lease] = now


def _active_run(agent: Agent, run_id: int) -> BackupRun:
    run = (
        BackupRun.objects.select_related("repository__passphrase", "policy", "machine")
        .filter(pk=run_id, machine=agent.machine)
        .first()
    )
    if run is None:
        raise AgentJobError(f"run {run_id} is not a run of this machine", status=404, code="unknown")
    if run.cancel_requested and run.state in (RunState.RUNNING, RunState.COMMITTING):
        _end(run, RunState.CANCELLED, "")
        raise AgentJobError("the run was cancelled", code="cancelled")
    if run.state not in (RunState.RUNNING, RunState.COMMITTING):
        raise AgentJobError(f"run {run_id} is {run.get_state_display().lower()}", code=run.state)
    return run


def start(agent: Agent, run_id: int) -> dict[str, Any]:
    """Claim a queued run for this agent and describe the job. Asking again while it runs (the answer was lost
    on a dropped connection) returns the same job."""
    worker = f"agent on {agent.machine.name}"[:200]
    lease = f"agent-{run_id}-{os.urandom(8).hex()}"
    claimed = BackupRun.objects.filter(
        pk=run_id,
        machine=agent.machine,
        state__in=[RunState.QUEUED, RunState.WAITING],
        cancel_requested=False,
        policy__mode=BackupMode.AGENT,
    ).update(
        state=RunState.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        phase="starting on the agent",
        worker=worker,
        lease=lease,
    )
    run = _active_run(agent, run_id)
    if not claimed and run.worker != worker:
        raise AgentJobError(f"run {run_id} is running elsewhere ({run.worker})")
    engine = _engine(run)
    from protection.backup import _announce, note_step

    policy = run.policy
    assert policy is not None  # claimed only with an agent-mode policy
    if claimed:
        where = "on the agent" if policy.dedup_location == DedupLocation.AGENT else "on the console"
        note_step(run, f"started by the agent on {run.machine.name}; deduplication {where}")
    _announce(run)
    parent = (
        RecoveryPoint.objects.filter(machine=run.machine, repository=run.repository, kind=PointKind.FILES)
        .order_by("-taken_at", "-pk")
        .values_list("snapshot_id", flat=True)
        .first()
    )
    limit = policy.bandwidth_limit_mbps
    return {
        "run": run.pk,
        "policy": policy.name,
        "paths": _lines(policy.include_paths),
        "excludes": _lines(policy.exclude_patterns),
        "volumes": _lines(policy.volumes),
        "pre_script": policy.pre_script,
        "post_script": policy.post_script,
        "chunking": {"min": MIN_CHUNK, "avg": AVERAGE_CHUNK, "max": MAX_CHUNK},
        "tree_version": TREE_VERSION,
        "block_size": engine.config.block_size,
        "table_span": TABLE_SPAN,
        "id_key": engine.master.chunk_id.hex(),
        "source_dedup": policy.dedup_location == DedupLocation.AGENT,
        "parent": parent,
        "batch_bytes": BATCH_BYTES,
        "bandwidth_bytes_per_second": limit * 125_000 if limit else None,
    }


def _parse_ids(ids: Any) -> list[bytes]:
    if not isinstance(ids, list) or len(ids) > MAX_IDS_PER_QUERY:
        raise AgentJobError(f"ids must be a list of at most {MAX_IDS_PER_QUERY} chunk ids", status=400)
    return [_hex_id(item) for item in ids]


def missing(agent: Agent, run_id: int, ids: Any) -> list[str]:
    """Which of these ids the repository lacks: only those travel."""
    run = _active_run(agent, run_id)
    if run.policy is None or run.policy.dedup_location != DedupLocation.AGENT:
        # Only with dedup at the agent: the answer tells whether content exists anywhere in the repository.
        raise AgentJobError(
            "this policy deduplicates at the console: send every chunk", code="no-source-dedup"
        )
    wanted = _parse_ids(ids)
    engine = _engine(run)
    return [chunk_id.hex() for chunk_id in wanted if engine.index.lookup(chunk_id) is None]


@dataclass
class StoreResult:
    received: int = 0
    stored: int = 0
    new_bytes: int = 0
    stored_bytes: int = 0
    wire_bytes: int = 0
    rejected: list[str] = field(default_factory=list)


def _read_exactly(stream: IO[bytes], length: int) -> bytes:
    parts = []
    while length:
        data = stream.read(length)
        if not data:
            raise AgentJobError("the upload ended in the middle of a chunk", status=400, code="truncated")
        parts.append(data)
        length -= len(data)
    return b"".join(parts)


def store_chunks(agent: Agent, run_id: int, stream: IO[bytes]) -> StoreResult:
    """Store a batch of chunks sent as frames. Each id is checked against its content first; a false one is
    refused (and nothing is stored under it). Returns once every chunk is in a pack confirmed stored and
    indexed, so what was acknowledged survives a crash of either side."""
    run = _active_run(agent, run_id)
    engine = _engine(run)
    result = StoreResult()
    frames: list[tuple[int, bytes, bytes]] = []
    while True:
        header = stream.read(FRAME.size)
        if not header:
            break
        if len(header) < FRAME.size:
            header += _read_exactly(stream, FRAME.size - len(header))
        flags, chunk_id, length = FRAME.unpack(header)
        if length > MAX_CHUNK_BYTES:
            raise AgentJobError(f"a chunk of {length} bytes is larger than allowed", status=400)
        frames.append((flags, chunk_id, _read_exactly(stream, length)))
        result.wire_bytes += FRAME.size + length
    result.received = len(frames)
    master = engine.master

    def check(frame: tuple[int, bytes, bytes]) -> bytes | None:
        """On a verifier thread (zstd and BLAKE3 release the GIL): the chunk's content if its id is true."""
        flags, chunk_id, payload = frame
        data = payload
        if flags & FLAG_ZSTD:
            try:
                data = _decompressor().decompress(payload, max_output_size=MAX_CHUNK_BYTES)
            except zstandard.ZstdError:
                return None
        return data if master.chunk_id_of(data) == chunk_id else None

    with engine.writer(threads=2, lease=False) as writer:  # the run's own lease covers it
        for (flags, chunk_id, payload), data in zip(frames, _verifiers.map(check, frames), strict=True):
            if data is None:
                result.rejected.append(chunk_id.hex())
                continue
            # Checked against its id, and (for a zstd frame) to decompress to exactly these bytes: the agent's
            # frame is stored as it is, without compressing again.
            writer.add(
                data,
                meta=bool(flags & FLAG_META),
                compressed=payload if flags & FLAG_ZSTD else None,
                chunk_id=chunk_id,
            )
        writer.flush()
        result.stored = writer.stats.new_chunks
        result.new_bytes = writer.stats.new_bytes
        result.stored_bytes = writer.stats.stored_bytes
    if result.rejected:
        raise AgentJobError(
            f"{len(result.rejected)} chunk(s) do not match their ids; nothing was stored under them",
            status=400,
            code="bad-chunk",
            rejected=result.rejected[:100],
        )
    from django.db.models import F

    BackupRun.objects.filter(pk=run.pk).update(
        bytes_new=F("bytes_new") + result.new_bytes, bytes_stored=F("bytes_stored") + result.stored_bytes
    )
    return result


def progress(agent: Agent, run_id: int, data: dict[str, Any]) -> None:
    run = _active_run(agent, run_id)
    _touch(run)
    try:
        done, total, rate = (
            int(data.get("done") or 0),
            int(data.get("total") or 0),
            float(data.get("rate") or 0),
        )
    except (TypeError, ValueError):
        raise AgentJobError("done, total and rate must be numbers", status=400) from None
    from protection.backup import note_step

    phase = str(data.get("phase") or "")[:200]
    if phase and phase != run.phase:
        note_step(run, phase)  # each phase the agent enters, with its time
    if isinstance(data.get("note"), str) and data["note"].strip():
        note_step(run, data["note"].strip())
    report(
        run,
        phase=phase,
        done=max(0, done),
        total=max(0, total),
        rate=max(0.0, rate),
        disk=str(data.get("current") or "")[:200],
        sent=int(data.get("sent") or 0),
    )


# --- commit ---------------------------------------------------------------------------------------------------------


class _Checker:
    """Walks what a manifest would name and collects every chunk the index lacks."""

    def __init__(self, engine: EngineRepository) -> None:
        self.engine = engine
        self.missing: list[str] = []
        self.chunks = 0

    def need(self, chunk_id: bytes) -> bool:
        self.chunks += 1
        if self.engine.index.lookup(chunk_id) is None:
            if len(self.missing) < 1000:
                self.missing.append(chunk_id.hex())
            return False
        return True

    def tree(self, tree_id: str) -> dict[str, int]:
        totals = {"files": 0, "directories": 0, "symlinks": 0, "logical_bytes": 0}
        stack = [tree_id]
        while stack:
            current = stack.pop()
            if not self.need(_hex_id(current)):
                continue
            try:  # the engine's own tree reader: one path component per name, no name twice
                entries = read_tree(self.engine, current)
            except (ValueError, KeyError, TypeError, UnsafePath) as error:
                raise AgentJobError(f"tree {current[:16]}… is malformed: {error}", status=400) from None
            for entry in entries:
                kind = entry.get("type")
                if kind == "dir":
                    totals["directories"] += 1
                    if "tree" not in entry:
                        raise AgentJobError(f"tree {current[:16]}… has a folder without its tree", status=400)
                    stack.append(str(entry["tree"]))
                elif kind == "file":
                    totals["files"] += 1
                    if not isinstance(entry.get("size", 0), int):
                        raise AgentJobError(
                            f"tree {current[:16]}… has a file size that is no number", status=400
                        )
                    totals["logical_bytes"] += entry.get("size") or 0
                    for chunk in entry.get("chunks") or []:
                        self.need(_hex_id(chunk))
                elif kind == "symlink":
                    totals["symlinks"] += 1
                else:
                    raise AgentJobError(f"tree {current[:16]}… has an entry of unknown type", status=400)
        return totals

    def disk(self, disk: dict[str, Any], block_size: int) -> dict[str, Any]:
        try:
            name, size, tables = str(disk["name"]), int(disk["size"]), [str(t) for t in disk["tables"]]
        except (KeyError, TypeError, ValueError):
            raise AgentJobError("each disk needs name, size and tables", status=400) from None
        blocks = -(-size // block_size)
        if len(tables) != -(-blocks // TABLE_SPAN):
            raise AgentJobError(f"disk {name}: {len(tables)} tables for {blocks} blocks", status=400)
        zero = 0
        for number, table_id in enumerate(tables):
            if not self.need(_hex_id(table_id)):
                continue
            table = self.engine.read_chunk(_hex_id(table_id))
            if len(table) != 32 * min(TABLE_SPAN, blocks - number * TABLE_SPAN):
                raise AgentJobError(f"disk {name}: block table {number} has the wrong length", status=400)
            for at in range(0, len(table), 32):
                block = table[at : at + 32]
                if block == ZERO_ID:
                    zero += 1
                elif self.need(block):
                    # Every block must hold exactly its place's bytes, or the image restores shifted.
                    index = number * TABLE_SPAN + at // 32
                    expected = min(block_size, size - index * block_size)
                    location = self.engine.locate(block)
                    if location.entry.raw_length != expected:
                        raise AgentJobError(
                            f"disk {name}: block {index} holds {location.entry.raw_length} bytes, not {expected}",
                            status=400,
                        )
        return {
            "name": name,
            "size": size,
            "block_size": block_size,
            "tables": tables,
            "change_id": None,
            "full_read": True,
            "stats": {"zero_bytes": zero * block_size},
        }


def _hex_id(value: Any) -> bytes:
    try:
        chunk_id = bytes.fromhex(str(value))
    except ValueError:
        chunk_id = b""
    if len(chunk_id) != 32:
        raise AgentJobError(f"{str(value)[:70]!r} is not a chunk id", status=400)
    return chunk_id


def commit(agent: Agent, run_id: int, data: dict[str, Any]) -> RecoveryPoint:
    """Write the snapshot manifest once every chunk it names is stored; a kind already committed by this run
    returns its point (the agent retried after losing the answer)."""
    run = _active_run(agent, run_id)
    kind = data.get("kind")
    if kind not in PointKind.values:
        raise AgentJobError("kind must be files or image", status=400)
    done = RecoveryPoint.objects.filter(run=run, kind=kind).first()
    if done is not None:
        return done
    engine = _engine(run)
    checker = _Checker(engine)
    agent_stats = data.get("stats") if isinstance(data.get("stats"), dict) else {}
    stats = {key: int(value) for key, value in agent_stats.items() if isinstance(value, int)}
    if kind == PointKind.FILES:
        tree = str(data.get("tree") or "")
        totals = checker.tree(tree)
        content: dict[str, Any] = {"tree": tree}
        point_disks: list[dict[str, Any]] = []
    else:
        disks = data.get("disks")
        if not isinstance(disks, list) or not disks:
            raise AgentJobError("an image commit needs its disks", status=400)
        manifest_disks = [checker.disk(disk, engine.config.block_size) for disk in disks]
        totals = {
            "logical_bytes": sum(d["size"] for d in manifest_disks),
            "zero_bytes": sum(d["stats"]["zero_bytes"] for d in manifest_disks),
        }
        content = {"disks": manifest_disks}
        point_disks = [
            {
                "key": d["name"],
                "label": d["name"],
                "capacity": d["size"],
                "full_read": True,
                "read_bytes": d["size"],
            }
            for d in manifest_disks
        ]
    if checker.missing:
        raise AgentJobError(
            f"{len(checker.missing)} chunk(s) the snapshot names are not stored (uploaded too long ago and "
            "pruned, or never sent)",
            code="missing",
            missing=checker.missing,
        )
    run.refresh_from_db()
    BackupRun.objects.filter(pk=run.pk).update(state=RunState.COMMITTING)
    when = now_utc()
    snapshot = Snapshot(
        id=new_snapshot_id(when),
        kind=kind,
        time=when.isoformat(),
        hostname=run.machine.name,
        machine=run.machine.identity,
        tags=[f"run:{run.pk}", "agent"],
        parent=str(data.get("parent")) if kind == PointKind.FILES and data.get("parent") else None,
        stats={  # the agent's own figures first: what the console measured and checked wins
            **stats,
            "chunks": checker.chunks,
            **totals,
            "new_bytes": run.bytes_new,
            "stored_bytes": run.bytes_stored,
        },
        **content,
    )
    try:
        engine.commit_snapshot(snapshot)
    except EngineError as error:
        raise AgentJobError(
            f"the manifest could not be stored: {error}", status=503, code="storage"
        ) from None
    with transaction.atomic():
        point = record_point(
            machine=run.machine,
            repository=run.repository,
            run_id=run.pk,
            snapshot=snapshot,
            kind=kind,
            consistent=bool(run.policy and run.policy.pre_script.strip()),
            disks=point_disks,
        )
        BackupRun.objects.filter(pk=run.pk).update(snapshot_id=snapshot.id, state=RunState.RUNNING)
    from protection.backup import _size, note_step

    if kind == PointKind.FILES:
        what = (
            f"{totals.get('files', 0)} file(s), {_size(stats.get('read_bytes', 0))} read"
            f", {_size(stats.get('sent_bytes', 0))} sent"
        )
    else:
        what = f"{len(point_disks)} volume(s), {_size(totals.get('logical_bytes', 0))}"
    note_step(
        run, f"{'files' if kind == PointKind.FILES else 'volume'} point {snapshot.id} committed: {what}"
    )
    return point


def finish(agent: Agent, run_id: int, error: str, warning: str = "") -> BackupRun:
    """The agent is done: committed when it reports no error and committed something, else failed. A warning
    (a post-script failed, paths skipped) stays on the committed run for the admin to read."""
    run = _active_run(agent, run_id)
    if not error and not RecoveryPoint.objects.filter(run=run).exists():
        error = "the agent finished without committing a snapshot"
    if error:
        return _end(run, RunState.FAILED, error)
    if warning:
        from protection.backup import note_step

        note_step(run, f"warning: {warning}")
    finished = _end(run, RunState.COMMITTED, "", warning)
    if run.policy is not None:
        from protection.retention import after_commit

        for point in RecoveryPoint.objects.filter(run=run):
            after_commit(point, run.policy, catalog_now=False)
    return finished


def _end(run: BackupRun, state: str, error: str, warning: str = "") -> BackupRun:
    from protection.backup import _finish

    if run.lease:
        _renewed.pop(run.lease, None)
        with contextlib.suppress(EngineError, OSError):  # else the lease lapses by itself
            drop_lease(repositories.open_repository(run.repository, refresh=False).storage, run.lease)
    BackupRun.objects.filter(pk=run.pk).update(lease="")
    return _finish(run, state, error, warning=warning)
