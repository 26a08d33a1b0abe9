"""One bad object never locks a repository: stray key slots, manifests and index files are skipped and named,
everything else keeps working; short reads, missing sources and failed restores never pass for success."""

from __future__ import annotations

import datetime
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.errors import IntegrityError, LockedError
from engine.files import FileTreeWriter, restore_tree
from engine.image import ImageWriter, restore_image
from engine.locks import LOCKS, LeaseHolder, unlock
from engine.maintenance import rebuild_index, verify
from engine.prune import PruneRefused, prune
from engine.repository import Repository
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, PASSPHRASE, SMALL_PACK, backup, engine_cli, make_image


def cli(storage: LocalStorage, *args: str, stdin: Any = None) -> subprocess.CompletedProcess[str]:
    return engine_cli(storage.root, *args, stdin=stdin)


class Trickle(io.RawIOBase):
    """A pipe-like source: every read returns at most 10,000 bytes."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(min(size, 10_000) if size >= 0 else 10_000)


def test_short_reads_from_a_pipe_make_whole_blocks(repository: Repository, tmp_path: Path) -> None:
    image = make_image(700_001, seed=3)
    writer = ImageWriter(repository, machine="vm-1")
    writer.write_disk("disk-0", Trickle(bytes(image)), size=len(image))  # type: ignore[arg-type]
    snapshot = writer.commit()
    target = tmp_path / "out.raw"
    restore_image(repository, repository.load_snapshot(snapshot.id), "disk-0", target)
    assert target.read_bytes() == bytes(image)
    assert verify(repository, full=True).ok


def test_a_garbage_key_slot_is_skipped(repository: Repository, storage: LocalStorage) -> None:
    storage.put("keys/0000garbage", b"\x00not json at all")
    storage.put("keys/0001wrongshape", json.dumps({"kdf": "scrypt"}).encode())
    opened = Repository.open(storage, PASSPHRASE)
    assert opened.config.id == repository.config.id
    assert "(unreadable)" in {slot.label for slot in opened.key_slots()}
    with pytest.raises(KeyError):
        opened.remove_key("no-such-slot")
    assert cli(storage, "key", "remove", "--slot", "no-such-slot").returncode != 0


def test_garbage_and_swapped_manifests_are_named_and_the_rest_keeps_working(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    image = make_image(256 * 1024, seed=4)
    good = backup(repository, image)
    storage.put("snapshots/20990101T000000Z-deadbeef", b"garbage")
    storage.put("snapshots/20990101T000001Z-cafecafe", storage.get(f"snapshots/{good.id}"))  # swapped
    fresh = Repository.open(storage, PASSPHRASE)
    assert [s.id for s in fresh.snapshots()] == [good.id]
    assert len(fresh.unreadable) == 2
    listed = cli(storage, "snapshots", "--json")
    assert listed.returncode == 0 and "forget 20990101T000000Z-deadbeef" in listed.stderr
    latest = backup(fresh, image, parent=fresh.load_snapshot(good.id))  # backups go on
    with pytest.raises(PruneRefused, match="forget 20990101T00000"):
        prune(fresh, grace=datetime.timedelta(0))
    assert cli(storage, "forget", "20990101T000000Z", "20990101T000001Z").returncode == 0
    prune(Repository.open(storage, PASSPHRASE), grace=datetime.timedelta(0))
    target = tmp_path / "latest.raw"
    restore_image(fresh, fresh.load_snapshot(latest.id), "disk-0", target)
    assert target.read_bytes() == bytes(image)


def test_a_garbage_index_file_blocks_neither_backups_nor_restores(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    image = make_image(256 * 1024, seed=5)
    first = backup(repository, image)
    storage.put("index/" + "ab" * 16, b"BWO1Igarbage" + os.urandom(64))
    fresh = Repository.open(storage, PASSPHRASE)
    fresh.pack_target = SMALL_PACK
    other = make_image(256 * 1024, seed=6)
    second = backup(fresh, other)
    for snapshot, content in ((first, image), (second, other)):
        target = tmp_path / f"{snapshot.id}.raw"
        restore_image(fresh, fresh.load_snapshot(snapshot.id), "disk-0", target)
        assert target.read_bytes() == bytes(content)
    assert "index/" + "ab" * 16 in fresh.unreadable
    assert not verify(fresh).ok  # named as an error until rebuilt
    with pytest.raises(PruneRefused, match="rebuild-index"):
        prune(fresh, grace=datetime.timedelta(0))
    report = rebuild_index(fresh)
    assert report.kept_index_files == []  # every pack's header read: the garbage file had nothing to add
    assert verify(Repository.open(storage, PASSPHRASE), full=True).ok


def test_backing_up_a_missing_folder_or_a_file_fails(storage: LocalStorage, tmp_path: Path) -> None:
    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    missing = cli(storage, "backup-dir", str(tmp_path / "nothing-here"), "--machine", "h")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    not_folder = cli(storage, "backup-dir", str(regular), "--machine", "h")
    assert not_folder.returncode == 2 and "not a folder" in not_folder.stderr
    assert Repository.open(storage, PASSPHRASE).snapshot_ids() == []


def test_a_failed_restore_leaves_nothing_under_the_real_name(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    image = make_image(512 * 1024, seed=7)
    snapshot = backup(repository, image)
    pack = max(storage.list("data/"), key=lambda info: info.size)
    path = storage.root / pack.key
    damaged = bytearray(path.read_bytes())
    damaged[200] ^= 0xFF
    path.write_bytes(bytes(damaged))
    target = tmp_path / "restored.raw"
    with pytest.raises(IntegrityError):
        restore_image(Repository.open(storage, PASSPHRASE), snapshot, "disk-0", target)
    assert not target.exists()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".partial")]
    assert cli(storage, "restore", snapshot.id, str(target), "--disk", "nope").stderr.count(
        "its disks: disk-0"
    )


def test_unlock_clears_a_killed_prune_but_not_a_live_backup_elsewhere(storage: LocalStorage) -> None:
    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = storage.now()
    record = {
        "kind": "prune",
        "hostname": socket.gethostname(),
        "pid": dead.pid,
        "started": started.isoformat(),
        "expires": (started + datetime.timedelta(minutes=5)).isoformat(),
    }
    storage.put(LOCKS + "killedprune", json.dumps(record).encode())
    # The next prune is not held up by a dead process of this host...
    with LeaseHolder(storage, "prune", exclusive=True):
        pass
    elsewhere = {**record, "kind": "backup", "hostname": "proxy-7", "pid": 1}
    storage.put(LOCKS + "livebackup", json.dumps(elsewhere).encode())
    report = unlock(storage)
    assert any("killedprune" in line for line in report.removed)
    assert report.refused and "proxy-7" in report.refused[0] and str(started.year) in report.refused[0]
    assert cli(storage, "unlock").returncode == 0
    assert storage.stat(LOCKS + "livebackup") is not None
    assert cli(storage, "unlock", "--force").returncode == 0
    assert storage.stat(LOCKS + "livebackup") is None


def test_the_lock_message_gives_dates(storage: LocalStorage) -> None:
    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    with LeaseHolder(storage, "prune", exclusive=True), pytest.raises(LockedError) as locked:
        LeaseHolder(storage, "prune", exclusive=True).acquire()
    year = str(datetime.datetime.now(datetime.UTC).year)
    assert str(locked.value).count(year) == 2 and "unlock" in str(locked.value)


def test_verify_sample_must_be_a_fraction(repository: Repository, storage: LocalStorage) -> None:
    result = cli(storage, "verify", "--sample", "2")
    assert result.returncode != 0 and "fraction" in result.stderr


def test_an_edit_that_keeps_size_and_mtime_is_backed_up_again(repository: Repository, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    source.mkdir()
    path = source / "ledger.db"
    path.write_bytes(b"A" * 50_000)
    first = FileTreeWriter(repository, machine="h").write(source)
    before = path.stat()
    path.write_bytes(b"B" * 50_000)  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime put back
    second = FileTreeWriter(repository, machine="h", parent=first).write(source)
    restore_tree(repository, repository.load_snapshot(second.id), tmp_path / "out")
    assert (tmp_path / "out" / "ledger.db").read_bytes() == b"B" * 50_000


def test_a_disk_that_ends_early_is_committed_with_a_warning(repository: Repository, tmp_path: Path) -> None:
    image = make_image(300_000, seed=8)
    writer = ImageWriter(repository, machine="vm-1")
    writer.write_disk("disk-0", io.BytesIO(bytes(image[:200_000])), size=len(image))  # shrank mid-read
    snapshot = writer.commit()
    assert snapshot.warnings and "ended early" in snapshot.warnings[0]
    assert repository.load_snapshot(snapshot.id).warnings == snapshot.warnings
    target = tmp_path / "out.raw"
    restore_image(repository, repository.load_snapshot(snapshot.id), "disk-0", target)
    assert target.read_bytes() == bytes(image[:200_000])


def test_an_image_piped_in_is_read_to_its_end(storage: LocalStorage, tmp_path: Path) -> None:
    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    image = bytes(make_image(400_000, seed=9))
    (tmp_path / "disk.raw").write_bytes(image)
    with open(tmp_path / "disk.raw", "rb") as pipe_end:
        feeder = subprocess.Popen(["cat"], stdin=pipe_end, stdout=subprocess.PIPE)
        assert feeder.stdout is not None
        piped = cli(storage, "backup-image", "/dev/stdin", "--machine", "vm", "--json", stdin=feeder.stdout)
        feeder.wait()
    assert piped.returncode == 0, piped.stderr
    snapshot_id = json.loads(piped.stdout)["snapshot"]
    target = tmp_path / "out.raw"
    assert cli(storage, "restore", snapshot_id, str(target), "--disk", "stdin").returncode == 0
    assert target.read_bytes() == image
