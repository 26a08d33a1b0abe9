"""Backups run by the agent: files at file level and whole volumes at block level, deduplicated at the source.

The agent chunks like the console's engine (FastCDC for files, fixed blocks for volumes) and names each chunk by
keyed BLAKE3 with the repository's chunk-id key. With source-side dedup it asks which ids the repository lacks and
sends only those (zstd-compressed); otherwise it sends them all and the console deduplicates. Files whose size,
modification time and inode match the last committed backup reuse its chunk list without being read (a local
cache in the state folder, trusted only for that backup). Every directory becomes a tree object in the engine's
format, so the console stores exactly what its own file backups store.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import sqlite3
import stat
import struct
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_agent.client import AgentError, Client, Refused

logger = logging.getLogger("bulwark_agent")
FRAME = struct.Struct("!B32sI")
FLAG_META = 1
FLAG_ZSTD = 2
ZERO_ID = bytes(32)
PROGRESS_SECONDS = 1.0
# While an upload is awaited, progress (and so the cancel check) is sent at least this often.
WAIT_STEP_SECONDS = 0.5
SCRIPT_TIMEOUT = 3600


class Cancelled(Exception):
    """The console cancelled the run: stop at once, commit nothing."""


class JobFailed(Exception):
    """The job cannot go on (a pre-script failed, nothing to back up); the console is told why."""


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import blake3
        import zstandard
        from pyfastcdc.cy import FastCDC
    except ImportError as error:
        raise JobFailed(
            f"this agent lacks {error.name}: install bulwark-agent with its dependencies (blake3, pyfastcdc, "
            "zstandard) to run backups"
        ) from None
    return blake3, zstandard, FastCDC


@dataclass
class Figures:
    total: int = 0
    done: int = 0
    read: int = 0
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    unchanged_files: int = 0
    skipped: int = 0
    chunks: int = 0
    sent_chunks: int = 0
    sent_bytes: int = 0
    errors: list[str] = field(default_factory=list)


def _incompressible(compressor: Any, data: bytes) -> bool:
    """Eight evenly spread 1 KiB samples of a large chunk that do not compress at all (media, archives,
    encrypted files): the whole chunk is sent raw without paying a full zstd pass (as the engine does)."""
    if len(data) < 32 * 1024:
        return False
    step = len(data) // 8
    sample = b"".join(data[i * step : i * step + 1024] for i in range(8))
    return len(compressor.compress(sample)) >= len(sample) * 0.97


class Session:
    """One run on the console: chunk ids, batched uploads, progress and the cancel check."""

    def __init__(self, client: Client, spec: dict[str, Any]) -> None:
        self.blake3, zstandard, self.FastCDC = _libraries()
        self.client = client
        self.spec = spec
        self.run = int(spec["run"])
        self.id_key = bytes.fromhex(spec["id_key"])
        self.source_dedup = bool(spec.get("source_dedup"))
        self.batch_bytes = int(spec.get("batch_bytes") or 16 * 1024 * 1024)
        self.limit = spec.get("bandwidth_bytes_per_second")
        # zstd level 1, as the engine's own writer: on the agent's host compression competes with reading,
        # chunking and hashing, and level 3 costs about twice the time for a few percent.
        self.compressor = zstandard.ZstdCompressor(level=1)
        self.figures = Figures()
        self.known: set[bytes] = set()  # sent, or confirmed stored, during this run
        self.pending: list[tuple[bytes, int, bytes]] = []
        self.pending_bytes = 0
        self.phase = "starting"
        self.current = ""
        self.started = time.monotonic()
        self._last_progress = 0.0
        self._sent_at_last = 0
        self._rate = 0.0
        self._last_done = 0
        self._last_time = self.started
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._sending: Future[None] | None = None
        self._stop = threading.Event()  # the console cancelled: the upload thread stops pacing at once

    def path(self, step: str) -> str:
        return f"/api/agent/runs/{self.run}/{step}/"

    def call(self, step: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.client.post(self.path(step), payload)
        except Refused as refusal:
            if refusal.code == "cancelled":
                self._stop.set()
                raise Cancelled() from None
            raise

    # --- chunks -------------------------------------------------------------------------------------------------
    def chunk_id(self, data: bytes) -> bytes:
        return self.blake3.blake3(data, key=self.id_key).digest()  # type: ignore[no-any-return]

    def add(self, data: bytes, *, meta: bool = False) -> str:
        chunk_id = self.chunk_id(data)
        self.figures.chunks += 1
        if chunk_id not in self.known:
            self.known.add(chunk_id)
            self.pending.append((chunk_id, FLAG_META if meta else 0, data))
            self.pending_bytes += len(data)
            if self.pending_bytes >= self.batch_bytes:
                self.flush()
        return chunk_id.hex()

    def flush(self, *, wait: bool = False) -> None:
        """Hand the pending chunks to the upload thread (one batch in flight while the next is read: memory
        stays at two batches); with wait, return once every batch is stored."""
        if self.pending:
            batch, self.pending, self.pending_bytes = self.pending, [], 0
            self._wait_sent()
            self._sending = self._sender.submit(self._send, batch)
        if wait:
            self._wait_sent()
        self.report()

    def _wait_sent(self) -> None:
        """Wait for the batch in flight; meanwhile report progress (about once a second), which is also how a
        cancel on the console reaches a run whose uploads are paced by a slow bandwidth limit."""
        if self._sending is not None:
            future, self._sending = self._sending, None
            while True:
                try:
                    future.result(timeout=WAIT_STEP_SECONDS)  # raises what the upload raised
                    return
                except TimeoutError:
                    self.report()

    def _send(self, batch: list[tuple[bytes, int, bytes]]) -> None:
        if self.source_dedup:
            missing = set(self.call("missing", {"ids": [item[0].hex() for item in batch]})["missing"])
            batch = [item for item in batch if item[0].hex() in missing]
        if not batch:
            return
        frames = []
        for chunk_id, flags, data in batch:
            packed = None if _incompressible(self.compressor, data) else self.compressor.compress(data)
            if packed is not None and len(packed) < len(data) * 0.97:
                flags, data = flags | FLAG_ZSTD, packed
            frames.append(FRAME.pack(flags, chunk_id, len(data)))
            frames.append(data)
        body = b"".join(frames)
        began = time.monotonic()
        try:
            self.client.post_bytes(self.path("chunks"), body)
        except Refused as refusal:
            if refusal.code == "cancelled":
                self._stop.set()
                raise Cancelled() from None
            raise
        self.figures.sent_chunks += len(batch)
        self.figures.sent_bytes += len(body)
        if self.limit:
            # Stay under the policy's bandwidth: a batch may not go faster than the limit allows (a wait that
            # a cancel cuts short).
            self._stop.wait(max(0.0, len(body) / float(self.limit) - (time.monotonic() - began)))

    def close(self) -> None:
        self._stop.set()
        self._sender.shutdown(wait=True, cancel_futures=True)

    # --- progress -----------------------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """A line for the run's step log on the console (a script's output, a phase's figures)."""
        self.report(force=True, note=text)

    def enter(self, phase: str) -> None:
        """A new phase, reported at once (the console logs each phase as a step, with its time)."""
        self.phase = phase
        self.report(force=True)

    def report(self, *, force: bool = False, note: str = "") -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_SECONDS:
            return
        elapsed = now - self._last_time
        if elapsed > 0:
            instant = (self.figures.done - self._last_done) / elapsed
            self._rate = instant if self._rate == 0 else 0.6 * self._rate + 0.4 * instant
        self._last_done, self._last_time, self._last_progress = self.figures.done, now, now
        self.call(
            "progress",
            {
                "phase": self.phase,
                "current": self.current[-200:],
                "done": self.figures.done,
                "total": max(self.figures.total, self.figures.done),
                "rate": self._rate,
                "sent": self.figures.sent_bytes,
                **({"note": note} if note else {}),
            },
        )


# --- files ----------------------------------------------------------------------------------------------------------


class FileCache:
    """Size, mtime, inode, ctime and chunk list of every file of the last committed backup (SQLite, state
    folder)."""

    def __init__(self, folder: Path, parent: str | None) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / "files.sqlite"
        self.new_path = folder / "files-new.sqlite"
        self.old: sqlite3.Connection | None = None
        if parent and self.path.exists():
            old = sqlite3.connect(str(self.path))
            row = old.execute("SELECT value FROM meta WHERE key = 'snapshot'").fetchone()
            if row and row[0] == parent:
                self.old = old
            else:
                old.close()
        if self.new_path.exists():
            self.new_path.unlink()
        self.new = sqlite3.connect(str(self.new_path))
        self.new.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        self.new.execute(
            "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, "
            "ctime_ns INTEGER, chunks TEXT)"
        )

    def unchanged(self, path: str, info: os.stat_result) -> list[str] | None:
        if self.old is None:
            return None
        try:
            row = self.old.execute(
                "SELECT size, mtime_ns, inode, ctime_ns, chunks FROM files WHERE path = ?", (path,)
            ).fetchone()
        except sqlite3.OperationalError:  # a cache written before ctime was kept: read everything once
            self.old.close()
            self.old = None
            return None
        # ctime too: an edit that puts size and mtime back (touch -r, tar -x, some editors) still changes it.
        if row and tuple(row[:4]) == (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns):
            return json.loads(row[4])  # type: ignore[no-any-return]
        return None

    def record(self, path: str, info: os.stat_result, chunks: list[str]) -> None:
        self.new.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
            (path, info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, json.dumps(chunks)),
        )

    def commit(self, snapshot: str) -> None:
        """The backup is committed: its files become the cache the next run trusts."""
        self.new.execute("INSERT INTO meta VALUES ('snapshot', ?)", (snapshot,))
        self.new.commit()
        self.close()
        os.replace(self.new_path, self.path)

    def close(self) -> None:
        if self.old is not None:
            self.old.close()
            self.old = None
        self.new.close()


ALL: Any = "*"  # a selection that takes everything under a folder (else a dict of chosen names)


def _selection(paths: list[str]) -> dict[str, Any]:
    """Nested dict of the chosen paths: name -> children (dict) or ALL."""
    root: dict[str, Any] = {}
    for path in paths:
        if not path.startswith("/"):
            raise JobFailed(f"the path {path!r} is not absolute")
        parts = [part for part in os.path.normpath(path).split("/") if part]
        if not parts:
            return {"": ALL}  # "/": the whole file system
        node = root
        for part in parts[:-1]:
            child = node.get(part, {})
            if child is ALL:
                break
            node = node.setdefault(part, child)
        else:
            node[parts[-1]] = ALL
    return root


# Never data: kernel and runtime pseudo-file systems (a backup of "/" skips them, as every agent does).
SYSTEM_EXCLUDES = ["/proc", "/sys", "/dev", "/run"]


class FileBackup:
    def __init__(self, session: Session, cache: FileCache, excludes: list[str], *, skip: list[str]) -> None:
        self.session = session
        self.cache = cache
        # Exact paths are a set lookup; patterns become one regular expression (fnmatch per entry is slow).
        self.excluded_paths = {*SYSTEM_EXCLUDES, *skip}
        patterns = [fnmatch.translate(pattern) for pattern in excludes]
        self.pattern = re.compile("|".join(patterns)) if patterns else None
        chunking = session.spec["chunking"]
        self.chunker = session.FastCDC(
            avg_size=int(chunking["avg"]), min_size=int(chunking["min"]), max_size=int(chunking["max"])
        )
        self.max_chunk = int(chunking["max"])
        self.version = int(session.spec.get("tree_version") or 1)

    def excluded(self, path: str, name: str) -> bool:
        """A pattern matches the entry's name or its whole path (`*.tmp`, `/srv/cache/*`)."""
        if path in self.excluded_paths:
            return True
        return self.pattern is not None and bool(self.pattern.match(name) or self.pattern.match(path))

    def measure(self, path: str, selection: Any) -> int:
        """Bytes of regular files under the selection (for the progress bar's total and ETA)."""
        total = 0
        stack = [(path, selection)]
        while stack:
            folder, chosen = stack.pop()
            try:
                items = list(os.scandir(folder))
            except OSError:
                continue
            for item in items:
                if chosen is not ALL and item.name not in chosen:
                    continue
                if self.excluded(item.path, item.name):
                    continue
                try:
                    if item.is_dir(follow_symlinks=False):
                        stack.append((item.path, ALL if chosen is ALL else chosen[item.name]))
                    elif item.is_file(follow_symlinks=False):
                        total += item.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
        return total

    def _store_tree(self, entries: list[dict[str, Any]]) -> str:
        entries.sort(key=lambda entry: entry["name"])
        data = json.dumps(
            {"version": self.version, "entries": entries}, sort_keys=True, separators=(",", ":")
        )
        return self.session.add(data.encode(), meta=True)

    def _file_chunks(self, path: str) -> tuple[list[str], int]:
        """The file's chunk ids and the bytes they hold (a file growing or shrinking while it is read records
        what was read, so its size and its chunks always agree)."""
        session, figures = self.session, self.session.figures
        ids = []
        total = 0
        with open(path, "rb") as handle:
            data = handle.read(self.max_chunk * 4)
            carry = b""
            while data:
                buffer = carry + data
                pieces = list(self.chunker.cut_buf(buffer))
                more = handle.read(self.max_chunk * 4)
                final = not more
                for piece in pieces if final else pieces[:-1]:
                    ids.append(session.add(bytes(piece.data)))
                    figures.done += piece.length
                    figures.read += piece.length
                    total += piece.length
                carry = b"" if final else bytes(pieces[-1].data)
                data = more
                session.report()
        return ids, total

    def directory(self, path: str, selection: Any) -> str:
        session, figures = self.session, self.session.figures
        entries: list[dict[str, Any]] = []
        try:
            listing = sorted(os.scandir(path), key=lambda item: item.name)
        except OSError as error:
            figures.errors.append(f"{path}: {error.strerror}")
            figures.skipped += 1
            return self._store_tree([])
        if selection is not ALL:
            present = {item.name for item in listing}
            for name in selection:
                if name not in present:
                    figures.errors.append(f"{os.path.join(path, name)}: not found")
        for item in listing:
            if selection is not ALL and item.name not in selection:
                continue
            if self.excluded(item.path, item.name):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except OSError as error:
                figures.errors.append(f"{item.path}: {error.strerror}")
                figures.skipped += 1
                continue
            entry: dict[str, Any] = {
                "name": item.name,
                "mode": stat.S_IMODE(info.st_mode),
                "uid": info.st_uid,
                "gid": info.st_gid,
                "mtime_ns": info.st_mtime_ns,
                "atime_ns": info.st_atime_ns,
            }
            try:
                if stat.S_ISDIR(info.st_mode):
                    chosen = ALL if selection is ALL else selection[item.name]
                    entry.update(type="dir", tree=self.directory(item.path, chosen))
                    figures.directories += 1
                elif stat.S_ISREG(info.st_mode):
                    session.current = item.path
                    entry.update(type="file", size=info.st_size, inode=info.st_ino)
                    if info.st_nlink > 1:  # a hard link: restored as one again with its partners
                        entry.update(nlink=info.st_nlink, device=info.st_dev)
                    chunks = self.cache.unchanged(item.path, info)
                    if chunks is not None:
                        figures.unchanged_files += 1
                        figures.done += info.st_size
                    elif info.st_size:
                        chunks, entry["size"] = self._file_chunks(item.path)
                    else:
                        chunks = []
                    entry["chunks"] = chunks
                    self.cache.record(item.path, info, chunks)
                    figures.files += 1
                elif stat.S_ISLNK(info.st_mode):
                    entry.update(type="symlink", target=os.readlink(item.path))
                    figures.symlinks += 1
                else:
                    figures.skipped += 1  # sockets, devices, FIFOs: not data
                    continue
            except OSError as error:
                figures.errors.append(f"{item.path}: {error.strerror}")
                figures.skipped += 1
                continue
            entries.append(entry)
        session.report()
        return self._store_tree(entries)


def back_up_files(session: Session, state_dir: Path) -> dict[str, Any]:
    spec = session.spec
    selection = _selection(list(spec["paths"]))
    cache = FileCache(state_dir / "cache", spec.get("parent"))
    try:
        backup = FileBackup(session, cache, list(spec.get("excludes") or []), skip=[str(state_dir.resolve())])
        root_selection = ALL if "" in selection else selection
        session.enter("counting files")
        session.figures.total += backup.measure("/", root_selection)
        session.enter("reading files")
        tree = backup.directory("/", root_selection)
        session.flush(wait=True)
        figures = session.figures
        if not figures.files and not figures.directories and figures.errors:
            raise JobFailed("nothing to back up: " + "; ".join(figures.errors[:5]))
        session.enter("committing files")
        answer = session.call(
            "commit",
            {
                "kind": "files",
                "tree": tree,
                "parent": spec.get("parent"),
                "stats": {
                    "read_bytes": figures.read,
                    "unchanged_files": figures.unchanged_files,
                    "skipped": figures.skipped,
                    "sent_bytes": figures.sent_bytes,
                    "sent_chunks": figures.sent_chunks,
                },
            },
        )
        cache.commit(str(answer["snapshot"]))
        return answer
    finally:
        cache.close()


# --- volumes --------------------------------------------------------------------------------------------------------


def _device_size(descriptor: int) -> int:
    return os.lseek(descriptor, 0, os.SEEK_END)


def back_up_volume(session: Session, device: str) -> dict[str, Any]:
    """A whole block device (or image file), block by block; all-zero blocks are not sent."""
    block_size = int(session.spec["block_size"])
    span = int(session.spec["table_span"]) * 32
    zero = bytes(block_size)
    figures = session.figures
    try:
        descriptor = os.open(device, os.O_RDONLY)
    except OSError as error:
        raise JobFailed(f"cannot open {device}: {error.strerror}") from None
    try:
        size = _device_size(descriptor)
        session.current = device
        session.enter(f"reading {device}")
        table = bytearray()
        tables: list[str] = []
        offset = 0
        while offset < size:
            want = min(block_size, size - offset)
            block = os.pread(descriptor, want, offset)
            while 0 < len(block) < want:  # a short read is not a short block: read on to the block's end
                more = os.pread(descriptor, want - len(block), offset + len(block))
                if not more:
                    break
                block += more
            if len(block) < want:
                raise JobFailed(f"{device} ended at {offset + len(block)} bytes, before its size of {size}")
            table += ZERO_ID if block == zero[: len(block)] else bytes.fromhex(session.add(block))
            offset += len(block)
            figures.done += len(block)
            figures.read += len(block)
            if len(table) >= span:
                tables.append(session.add(bytes(table[:span]), meta=True))
                del table[:span]
            session.report()
        if table:
            tables.append(session.add(bytes(table), meta=True))
    finally:
        os.close(descriptor)
    return {"name": device, "size": size, "tables": tables}


# --- the job --------------------------------------------------------------------------------------------------------


def run_script(script: str, run: int, phase: str) -> str:
    """Run the policy's pre- or post-script; what it printed last (for the step log), or JobFailed."""
    if not script.strip():
        return ""
    try:
        done = subprocess.run(  # noqa: S603  (the policy's script, set by a backup admin, run as this agent)
            ["/bin/sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            env={**os.environ, "BULWARK_RUN": str(run), "BULWARK_PHASE": phase},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise JobFailed(f"the {phase}-script ran longer than {SCRIPT_TIMEOUT} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise JobFailed(f"the {phase}-script exited with {done.returncode}: {' '.join(tail)}")
    output = " ".join((done.stdout or done.stderr).strip().splitlines()[-3:])
    return f"{phase}-script ran (exit 0){': ' + output[:400] if output else ''}"


def run_backup(client: Client, run_id: int, state_dir: Path) -> str:
    """Run one backup job to its end; returns the final state the console reports."""
    spec = client.post(f"/api/agent/runs/{run_id}/start/", {})
    session = Session(client, spec)
    error = ""
    warning = ""
    try:
        try:
            session.enter("pre-script")
            ran = run_script(str(spec.get("pre_script") or ""), run_id, "pre")
            if ran:
                session.note(ran)
            if spec.get("paths"):
                back_up_files(session, state_dir)
            if spec.get("volumes"):
                disks = []
                for device in spec["volumes"]:
                    session.figures.total += _size_of(device)
                for device in spec["volumes"]:
                    disks.append(back_up_volume(session, device))
                session.flush(wait=True)
                session.enter("committing volumes")
                session.call("commit", {"kind": "image", "disks": disks})
        finally:
            try:
                ran = run_script(str(spec.get("post_script") or ""), run_id, "post")
                if ran:
                    with contextlib.suppress(Cancelled, AgentError):
                        session.note(ran)
            except JobFailed as failure:
                warning = str(failure)
    except Cancelled:
        logger.info("run %s was cancelled by the console", run_id)
        session.close()
        return "cancelled"
    except JobFailed as failure:
        error = str(failure)
    except Refused as refusal:
        if refusal.code == "missing":
            error = (
                f"{len(refusal.data.get('missing') or [])} chunks vanished from the repository before the "
                "commit (the agent was away longer than its lease); the next run sends them again"
            )
        else:
            error = str(refusal)
    if session.figures.errors and not error:
        skipped = f"{len(session.figures.errors)} path(s) skipped: " + "; ".join(session.figures.errors[:5])
        warning = f"{warning}; {skipped}" if warning else skipped
    session.phase = "finishing"
    with contextlib.suppress(Cancelled, AgentError):
        session.report(force=True)
    session.close()
    answer = client.post(f"/api/agent/runs/{run_id}/finish/", {"error": error or "", "warning": warning})
    logger.info(
        "run %s %s: %s chunks, %s sent in %s chunks (%s retries)",
        run_id,
        answer.get("state"),
        session.figures.chunks,
        session.figures.sent_bytes,
        session.figures.sent_chunks,
        client.retries,
    )
    return str(answer.get("state"))


def _size_of(device: str) -> int:
    try:
        descriptor = os.open(device, os.O_RDONLY)
    except OSError:
        return 0
    try:
        return _device_size(descriptor)
    finally:
        os.close(descriptor)
