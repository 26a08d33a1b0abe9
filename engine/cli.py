"""bulwark-engine: the engine on the command line (python -m engine ...).

The repository is a folder or s3://bucket/prefix (with --s3-endpoint for S3-compatible stores). The passphrase
comes from BULWARK_PASSPHRASE, from the file named by BULWARK_PASSPHRASE_FILE, or from a prompt.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from engine.copy import copy_snapshot
from engine.errors import EngineError
from engine.files import FileTreeWriter, restore_tree
from engine.image import ImageWriter, restore_image
from engine.locks import unlock
from engine.maintenance import rebuild_index, verify
from engine.prune import forget, prune
from engine.repository import DEFAULT_BLOCK_SIZE, Repository, Snapshot
from engine.retention import RetentionSpec
from engine.storage import Storage
from engine.storage.local import LocalStorage


class ProgressBar:
    """A one-line progress bar with rate and ETA on a terminal; silent when output is not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, *, interval: float = 0.2) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.interval = interval
        self.started = time.monotonic()
        self._last = 0.0

    def step(self, done: int, total: int | None, phase: str) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < self.interval and (total is None or done < total)):
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        text = f"{phase}: {done / 1e6:,.0f} MB  {rate / 1e6:,.0f} MB/s"
        if total:
            fraction = min(done / total, 1.0)
            bar = "#" * int(fraction * 30)
            eta = (total - done) / rate if rate > 0 else 0
            text = f"{phase}: [{bar:<30}] {fraction:5.1%}  {rate / 1e6:,.0f} MB/s  ETA {eta:,.0f} s"
        self.stream.write("\r" + text[:110].ljust(110))
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def open_storage(location: str, endpoint: str | None) -> Storage:
    if location.startswith("s3://"):
        from engine.storage.s3 import S3Storage

        bucket, _, prefix = location[5:].partition("/")
        return S3Storage(bucket=bucket, prefix=prefix, endpoint_url=endpoint)
    return LocalStorage(location)


def passphrase(confirm: bool = False) -> str:
    if "BULWARK_PASSPHRASE" in os.environ:
        return os.environ["BULWARK_PASSPHRASE"]
    if "BULWARK_PASSPHRASE_FILE" in os.environ:
        return Path(os.environ["BULWARK_PASSPHRASE_FILE"]).read_text(encoding="utf-8").strip()
    first = getpass.getpass("Repository passphrase: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise SystemExit("the passphrases differ")
    return first


def pick_snapshot(repository: Repository, wanted: str, machine: str | None = None) -> Snapshot:
    if wanted == "latest":
        snapshots = [s for s in repository.snapshots() if machine is None or s.machine == machine]
        if not snapshots:
            raise SystemExit("no snapshot to use as 'latest'")
        return max(snapshots, key=lambda s: s.time)
    return repository.load_snapshot(snapshot_id(repository, wanted))


def snapshot_id(repository: Repository, wanted: str) -> str:
    """The one snapshot id that starts with `wanted`."""
    matches = [i for i in repository.snapshot_ids() if i.startswith(wanted)]
    if len(matches) != 1:
        raise SystemExit(f"{len(matches)} snapshots match {wanted!r}")
    return matches[0]


def command_backup_image(repository: Repository, args: argparse.Namespace) -> dict[str, Any]:
    bar = ProgressBar()
    parent = pick_snapshot(repository, args.parent, args.machine) if args.parent else None
    repository.refresh_index()  # a worker keeps its index and only reads the index files added since
    # engine_seconds: what a backup costs a worker that has the repository open (the console knows the parent
    # snapshot from its catalog and keeps the index between runs).
    started = time.perf_counter()
    writer = ImageWriter(
        repository, machine=args.machine, parent=parent, tags=args.tag, threads=args.threads, progress=bar
    )
    size = source_size(args.image)
    disk = args.disk or Path(args.image).name
    try:
        if args.changed_areas:
            if size is None:
                raise SystemExit("--changed-areas needs a file or a block device, not a pipe")
            areas = [
                (int(offset), int(length))
                for offset, length in json.loads(Path(args.changed_areas).read_text())
            ]
            with open(args.image, "rb") as source:
                writer.write_disk_areas(disk, source, size=size, areas=areas)
        else:
            with open(args.image, "rb", buffering=0) as raw:
                writer.write_disk(disk, raw, size=size)
        snapshot = writer.commit()
    except BaseException:
        writer.abort()
        raise
    bar.finish()
    return {
        "snapshot": snapshot.id,
        "engine_seconds": round(time.perf_counter() - started, 4),
        **snapshot.stats,
        "warnings": snapshot.warnings,
    }


def source_size(path: str) -> int | None:
    """A regular file's or a block device's size; None for a pipe (read to its end, no size expected)."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return os.path.getsize(path)
    if stat.S_ISBLK(mode):
        with open(path, "rb") as device:
            return device.seek(0, os.SEEK_END)
    return None


def command_restore(repository: Repository, args: argparse.Namespace) -> dict[str, Any]:
    bar = ProgressBar()
    snapshot = pick_snapshot(repository, args.snapshot)
    if snapshot.kind == "files":
        stats = restore_tree(repository, snapshot, args.target, progress=bar)
        bar.finish()
        return {
            "snapshot": snapshot.id,
            "files": stats.files,
            "directories": stats.directories,
            "symlinks": stats.symlinks,
        }
    names = [disk["name"] for disk in snapshot.disks]
    disk = args.disk or names[0]
    if disk not in names:
        raise SystemExit(f"snapshot {snapshot.id} has no disk {disk!r}; its disks: {', '.join(names)}")
    written = restore_image(
        repository, snapshot, disk, args.target, threads=args.threads, durable=not args.no_fsync, progress=bar
    )
    bar.finish()
    return {"snapshot": snapshot.id, "disk": disk, "written_bytes": written}


def command_backup_dir(repository: Repository, args: argparse.Namespace) -> dict[str, Any]:
    bar = ProgressBar()
    parent = pick_snapshot(repository, args.parent, args.machine) if args.parent else None
    writer = FileTreeWriter(repository, machine=args.machine, parent=parent, tags=args.tag, progress=bar)
    try:
        snapshot = writer.write(args.path)
    except BaseException:
        writer.abort()
        raise
    bar.finish()
    for error in writer.errors:
        sys.stderr.write(f"skipped: {error}\n")
    return {"snapshot": snapshot.id, **snapshot.stats, "warnings": snapshot.warnings}


def command_forget(repository: Repository, args: argparse.Namespace) -> dict[str, Any]:
    if args.snapshot_ids:
        # By id: also the way out for a snapshot whose manifest cannot be read (it cannot be judged by time).
        forgotten = []
        for wanted in args.snapshot_ids:
            found = snapshot_id(repository, wanted)
            if not args.dry_run:
                repository.forget_snapshot(found)
            forgotten.append({"id": found})
        return {"dry_run": args.dry_run, "keep": [], "forget": forgotten}
    spec = RetentionSpec(
        last=args.keep_last,
        hourly=args.keep_hourly,
        daily=args.keep_daily,
        weekly=args.keep_weekly,
        monthly=args.keep_monthly,
        yearly=args.keep_yearly,
    )
    decisions = forget(repository, spec, dry_run=args.dry_run)
    return {
        "dry_run": args.dry_run,
        "keep": [
            {"id": d.snapshot.id, "machine": d.snapshot.machine, "why": d.reasons}
            for d in decisions
            if d.keep
        ],
        "forget": [{"id": d.snapshot.id, "machine": d.snapshot.machine} for d in decisions if not d.keep],
    }


def command_stats(repository: Repository, args: argparse.Namespace) -> dict[str, Any]:
    storage = repository.storage
    stored = sum(
        info.size for prefix in ("data/", "index/", "snapshots/", "keys/") for info in storage.list(prefix)
    )
    index = repository.index
    snapshots = repository.snapshots()
    return {
        "snapshots": len(snapshots),
        "chunks": len(index),
        "packs": len(index.packs),
        "stored_bytes": stored,
        "logical_bytes": sum(s.stats.get("logical_bytes", 0) for s in snapshots),
        "index_memory_bytes": index.memory_bytes(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulwark-engine", description=__doc__)
    parser.add_argument("--repo", required=True, help="folder or s3://bucket/prefix")
    parser.add_argument("--s3-endpoint", help="endpoint URL of an S3-compatible store")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print results as one line of JSON")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    init = command("init", "create a repository")
    init.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    image = command("backup-image", "back up a disk image or block device")
    image.add_argument("image")
    image.add_argument("--machine", required=True)
    image.add_argument("--disk", help="disk name (default: the file name)")
    image.add_argument("--parent", help="snapshot id or 'latest' (needed with --changed-areas)")
    image.add_argument("--changed-areas", help="JSON file of [offset, length] pairs changed since the parent")
    image.add_argument("--tag", action="append", default=[])
    image.add_argument("--threads", type=int, default=2)
    command("snapshots", "list snapshots")
    restore = command("restore", "restore a disk image to a file or device")
    restore.add_argument("snapshot", help="snapshot id (or a unique prefix) or 'latest'")
    restore.add_argument("target")
    restore.add_argument("--disk")
    restore.add_argument("--threads", type=int, default=4)
    restore.add_argument("--no-fsync", action="store_true", help="do not wait for the data to reach the disk")
    check = command("verify", "check the repository")
    check.add_argument("--full", action="store_true", help="re-read every pack")
    check.add_argument("--sample", type=float, help="re-read this fraction of packs")
    command("stats", "sizes and counts")
    command("rebuild-index", "write a new index from the packs")
    release = command("unlock", "remove stale leases (expired, or of a process of this host that is gone)")
    release.add_argument("--force", action="store_true", help="also live leases of other hosts")
    tree = command("backup-dir", "back up a directory tree (file level)")
    tree.add_argument("path")
    tree.add_argument("--machine", required=True)
    tree.add_argument("--parent", help="snapshot id or 'latest': unchanged files are not read again")
    tree.add_argument("--tag", action="append", default=[])
    retention = command(
        "forget", "forget snapshots by id, or apply GFS retention (--dry-run: the prune simulator)"
    )
    retention.add_argument(
        "snapshot_ids", nargs="*", metavar="snapshot", help="snapshot ids (or unique prefixes)"
    )
    for rule in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        retention.add_argument(f"--keep-{rule}", type=int, default=0)
    retention.add_argument("--dry-run", action="store_true")
    sweep = command("prune", "remove data no snapshot uses (two phases, with a grace period)")
    sweep.add_argument("--grace-minutes", type=int, default=120)
    sweep.add_argument("--dry-run", action="store_true")
    duplicate = command("copy", "copy a snapshot to another repository (another tier)")
    duplicate.add_argument("snapshot")
    duplicate.add_argument("--to", required=True, help="destination folder or s3://bucket/prefix")
    keys = command("key", "manage passphrases (key slots)")
    keys.add_argument("action", choices=["list", "add", "remove", "passwd"])
    keys.add_argument("--slot", help="slot id, for remove")
    keys.add_argument("--label", default="added")
    args = parser.parse_args(argv)

    try:
        storage = open_storage(args.repo, args.s3_endpoint)
        if args.command == "init":
            repository = Repository.init(storage, passphrase(confirm=True), block_size=args.block_size)
            result: Any = {"repository": repository.config.id, "block_size": repository.config.block_size}
        else:
            repository = Repository.open(storage, passphrase())
            if args.command == "backup-image":
                result = command_backup_image(repository, args)
            elif args.command == "restore":
                result = command_restore(repository, args)
            elif args.command == "snapshots":
                result = [
                    {"id": s.id, "time": s.time, "machine": s.machine, "kind": s.kind, **s.stats}
                    for s in repository.snapshots()
                ]
                for key, unreadable in repository.unreadable.items():
                    if key.startswith("snapshots/"):
                        sys.stderr.write(
                            f"unreadable: {key}: {unreadable} ('forget {key.split('/', 1)[1]}' removes it)\n"
                        )
            elif args.command == "unlock":
                unlocked = unlock(storage, force=args.force)
                for line in unlocked.refused:
                    sys.stderr.write(f"refused (live; --force removes it): {line}\n")
                result = {"removed": unlocked.removed, "refused": unlocked.refused}
            elif args.command == "verify":
                if args.sample is not None and not 0 < args.sample <= 1:
                    raise SystemExit("--sample is a fraction of the packs: more than 0, at most 1")
                # Damaged and missing copies are recorded, so the next backup of that data stores it again.
                report = verify(
                    repository, full=args.full, sample=args.sample, progress=ProgressBar(), record=True
                )
                for problem in report.problems:
                    sys.stderr.write(str(problem) + "\n")
                result = {
                    "ok": report.ok,
                    "snapshots": report.snapshots,
                    "packs": report.packs,
                    "chunks_checked": report.chunks_checked,
                    "errors": len(report.errors),
                }
                if not report.ok:
                    sys.stdout.write(json.dumps(result) + "\n")
                    return 1
            elif args.command == "stats":
                result = command_stats(repository, args)
            elif args.command == "backup-dir":
                result = command_backup_dir(repository, args)
            elif args.command == "forget":
                result = command_forget(repository, args)
            elif args.command == "prune":
                pruned = prune(
                    repository, grace=datetime.timedelta(minutes=args.grace_minutes), dry_run=args.dry_run
                )
                result = pruned.__dict__
            elif args.command == "copy":
                destination_passphrase = os.environ.get("BULWARK_DESTINATION_PASSPHRASE") or getpass.getpass(
                    "Destination passphrase: "
                )
                destination = Repository.open(open_storage(args.to, args.s3_endpoint), destination_passphrase)
                copied, stats = copy_snapshot(
                    repository, destination, pick_snapshot(repository, args.snapshot), progress=ProgressBar()
                )
                result = {
                    "snapshot": copied.id,
                    "new_bytes": stats.new_bytes,
                    "stored_bytes": stats.stored_bytes,
                }
            elif args.command == "key":
                if args.action == "list":
                    result = [slot.__dict__ for slot in repository.key_slots()]
                elif args.action == "add":
                    result = {
                        "slot": repository.add_key(getpass.getpass("New passphrase: "), label=args.label)
                    }
                elif args.action == "remove":
                    if not args.slot:
                        raise SystemExit("key remove needs --slot")
                    try:
                        repository.remove_key(args.slot)
                    except KeyError as error:
                        raise SystemExit(str(error.args[0])) from None
                    result = {"removed": args.slot}
                else:
                    result = {"slot": repository.change_passphrase(getpass.getpass("New passphrase: "))}
            else:
                rebuilt = rebuild_index(repository, progress=ProgressBar())
                result = rebuilt.__dict__
    except EngineError as error:
        sys.stderr.write(f"bulwark-engine: {error}\n")
        return 2
    except SystemExit as refusal:  # a wrong argument or an ambiguous snapshot id: an error, as argparse's are
        if not isinstance(refusal.code, str):
            raise
        sys.stderr.write(f"bulwark-engine: {refusal.code}\n")
        return 2
    except OSError as error:
        sys.stderr.write(f"bulwark-engine: {error.filename or ''}: {error.strerror or error}\n")
        return 2
    except KeyError as error:  # a disk name the snapshot does not have
        sys.stderr.write(f"bulwark-engine: {error.args[0] if error.args else error}\n")
        return 2
    except ValueError as error:  # malformed --changed-areas, bad sizes
        sys.stderr.write(f"bulwark-engine: {error}\n")
        return 2
    sys.stdout.write(json.dumps(result, indent=None if args.json else 1) + "\n")
    warnings = result.get("warnings") if isinstance(result, dict) else None
    if warnings:
        # As restic does: 3 means a snapshot was committed, but not all of the source is in it.
        for warning in warnings:
            sys.stderr.write(f"warning: {warning}\n")
        return 3
    return 0
