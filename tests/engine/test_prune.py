"""Forget and prune: GFS retention, a dry run that says what would go, a grace period that protects
concurrent backups (on the storage's clock), and refusal when deleting could lose data."""

from __future__ import annotations

import datetime
import io
import random
from pathlib import Path

import pytest

from engine.image import ImageWriter, restore_image
from engine.maintenance import verify
from engine.prune import PruneRefused, forget, prune
from engine.repository import Repository
from engine.retention import RetentionSpec
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, PASSPHRASE, SMALL_PACK, backup, make_image

NO_GRACE = datetime.timedelta(0)


class ClockedStorage(LocalStorage):
    """A local folder whose clock the test sets: stands for the storage server's clock."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.clock = datetime.datetime.now(datetime.UTC)

    def now(self) -> datetime.datetime:
        return self.clock


def open_fresh(storage: LocalStorage) -> Repository:
    repository = Repository.open(storage, PASSPHRASE)
    repository.pack_target = SMALL_PACK
    return repository


def stored_bytes(storage: LocalStorage) -> int:
    return sum(info.size for info in storage.list("data/"))


@pytest.fixture
def clocked(tmp_path: Path) -> ClockedStorage:
    storage = ClockedStorage(tmp_path / "repo")
    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    return storage


def three_machines_days(storage: LocalStorage) -> tuple[list[str], bytearray]:
    repository = open_fresh(storage)
    ids = []
    image = make_image(1024 * 1024, seed=31)
    for day in range(3):
        image[day * 200_000 : day * 200_000 + 150_000] = make_image(150_000, seed=100 + day)
        ids.append(backup(repository, image).id)
    return ids, image


def test_forget_then_prune_frees_space_after_the_grace_period(
    clocked: ClockedStorage, tmp_path: Path
) -> None:
    ids, latest_image = three_machines_days(clocked)
    before = stored_bytes(clocked)
    packs_before = {info.key for info in clocked.list("data/")}
    decisions = forget(open_fresh(clocked), RetentionSpec(last=1))
    assert sorted(d.snapshot.id for d in decisions if not d.keep) == sorted(ids[:2])

    first = prune(open_fresh(clocked), grace=datetime.timedelta(minutes=30))
    assert first.marked_packs and not first.deleted_packs
    # Inside the grace period nothing is deleted (repacking only adds copies of live chunks).
    assert packs_before <= {info.key for info in clocked.list("data/")}
    assert verify(open_fresh(clocked), full=True).ok

    clocked.clock += datetime.timedelta(minutes=10)
    assert prune(open_fresh(clocked), grace=datetime.timedelta(minutes=30)).deleted_packs == []

    clocked.clock += datetime.timedelta(minutes=31)
    second = prune(open_fresh(clocked), grace=datetime.timedelta(minutes=30))
    assert sorted(second.deleted_packs) == sorted(first.marked_packs)
    assert stored_bytes(clocked) < before
    assert not any(
        info.key in packs_before and info.key.rsplit("/", 1)[-1] in second.deleted_packs
        for info in clocked.list("data/")
    )
    fresh = open_fresh(clocked)
    assert verify(fresh, full=True).ok
    restore_image(fresh, fresh.load_snapshot(ids[2]), "disk-0", tmp_path / "latest.img")
    assert (tmp_path / "latest.img").read_bytes() == bytes(latest_image)


def test_a_dry_run_says_what_would_go_and_why_and_changes_nothing(clocked: ClockedStorage) -> None:
    ids, _ = three_machines_days(clocked)
    listing = sorted(
        (info.key, info.size)
        for prefix in ("data/", "index/", "snapshots/", "pending/")
        for info in clocked.list(prefix)
    )
    decisions = forget(open_fresh(clocked), RetentionSpec(last=1, daily=1), dry_run=True)
    assert {d.snapshot.id: d.keep for d in decisions} == {ids[0]: False, ids[1]: False, ids[2]: True}
    assert next(d for d in decisions if d.keep).reasons[0] == "last 1 of 1"
    report = prune(open_fresh(clocked), dry_run=True, grace=NO_GRACE)
    assert report.dry_run and report.marked_packs == []  # nothing forgotten yet, so nothing unused
    assert (
        sorted(
            (info.key, info.size)
            for prefix in ("data/", "index/", "snapshots/", "pending/")
            for info in clocked.list(prefix)
        )
        == listing
    )


def test_prune_refuses_when_the_index_misses_used_chunks(clocked: ClockedStorage) -> None:
    three_machines_days(clocked)
    index_files = [info.key for info in clocked.list("index/")]
    clocked.delete(index_files[0])
    packs = sorted(info.key for info in clocked.list("data/"))
    with pytest.raises(PruneRefused, match="rebuild-index"):
        prune(open_fresh(clocked), grace=NO_GRACE)
    assert sorted(info.key for info in clocked.list("data/")) == packs


def test_a_backup_running_during_prune_is_never_harmed(clocked: ClockedStorage, tmp_path: Path) -> None:
    repository = open_fresh(clocked)
    image = make_image(768 * 1024, seed=41)
    old = backup(repository, image)
    # A backup starts: it holds a lease, and reuses every chunk of the old snapshot (same disk content).
    running = ImageWriter(open_fresh(clocked), machine="vm-1")
    running.write_disk("disk-0", io.BytesIO(bytes(image)))
    # Meanwhile the old snapshot is forgotten and pruned twice, well past the grace period.
    open_fresh(clocked).forget_snapshot(old.id)
    marked = prune(open_fresh(clocked), grace=NO_GRACE)
    assert marked.marked_packs
    clocked.clock += datetime.timedelta(hours=5)
    running.chunks._lease._write()  # what its refresh thread does every 100 s while the backup lives
    waiting = prune(open_fresh(clocked), grace=NO_GRACE)
    assert waiting.deleted_packs == [] and sorted(waiting.waiting_packs) == sorted(marked.marked_packs)
    # The backup commits; its snapshot refers to chunks in the set-aside packs, and they still restore.
    snapshot = running.commit()
    restore_image(open_fresh(clocked), snapshot, "disk-0", tmp_path / "during.img")
    assert (tmp_path / "during.img").read_bytes() == bytes(image)
    # The next prune sees them used and puts them back; nothing is lost, verify is clean.
    after = prune(open_fresh(clocked), grace=NO_GRACE)
    assert sorted(after.resurrected_packs) == sorted(marked.marked_packs) and after.deleted_packs == []
    fresh = open_fresh(clocked)
    assert verify(fresh, full=True).ok
    restore_image(fresh, snapshot, "disk-0", tmp_path / "after.img")
    assert (tmp_path / "after.img").read_bytes() == bytes(image)


def test_the_grace_period_follows_the_storage_clock_not_the_clients(
    clocked: ClockedStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ids, _ = three_machines_days(clocked)
    forget(open_fresh(clocked), RetentionSpec(last=1))
    marked = prune(open_fresh(clocked), grace=datetime.timedelta(minutes=15))
    # This client's clock runs 20 minutes fast; the storage says only 5 minutes have passed.
    import engine.repository

    fast = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=20)
    monkeypatch.setattr(engine.repository, "now_utc", lambda: fast)
    clocked.clock += datetime.timedelta(minutes=5)
    report = prune(open_fresh(clocked), grace=datetime.timedelta(minutes=15))
    assert report.deleted_packs == [] and sorted(report.waiting_packs) == sorted(marked.marked_packs)


def test_two_prunes_at_once_are_refused(clocked: ClockedStorage) -> None:
    from engine.errors import LockedError
    from engine.locks import LeaseHolder

    with LeaseHolder(clocked, "prune", exclusive=True), pytest.raises(LockedError, match="another prune"):
        prune(open_fresh(clocked), grace=NO_GRACE)


def test_orphan_packs_of_a_killed_backup_go_after_the_grace_period(clocked: ClockedStorage) -> None:
    three_machines_days(clocked)
    repository = open_fresh(clocked)
    writer = ImageWriter(repository, machine="vm-9")
    writer.write_disk("disk-0", io.BytesIO(random.Random(77).randbytes(512 * 1024)))
    writer.chunks.store_packs()  # packs stored, then the process "dies": no index, no manifest
    writer.chunks._lease.release()  # its lease expires (as a killed process's would)
    orphans = verify(open_fresh(clocked)).problems
    assert any(p.kind == "unindexed-pack" for p in orphans)
    assert prune(open_fresh(clocked), grace=datetime.timedelta(minutes=30)).deleted_orphans == []
    clocked.clock += datetime.timedelta(minutes=31)
    report = prune(open_fresh(clocked), grace=datetime.timedelta(minutes=30))
    assert report.deleted_orphans
    assert not any(p.kind == "unindexed-pack" for p in verify(open_fresh(clocked)).problems)


def test_prune_keeps_what_file_snapshots_use(clocked: ClockedStorage, tmp_path: Path) -> None:
    from engine.files import FileTreeWriter, restore_tree

    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "deep" / "er" / "data.bin").write_bytes(random.Random(3).randbytes(700_000))
    (tree / "top.txt").write_text("top")
    snapshot = FileTreeWriter(open_fresh(clocked), machine="fs").write(tree)
    three_machines_days(clocked)
    forget(open_fresh(clocked), RetentionSpec(last=1))  # per machine: the file snapshot stays
    prune(open_fresh(clocked), grace=NO_GRACE)
    clocked.clock += datetime.timedelta(hours=1)
    prune(open_fresh(clocked), grace=NO_GRACE)
    fresh = open_fresh(clocked)
    assert verify(fresh, full=True).ok
    restore_tree(fresh, fresh.load_snapshot(snapshot.id), tmp_path / "restored")
    assert (tmp_path / "restored" / "deep" / "er" / "data.bin").read_bytes() == (
        tree / "deep" / "er" / "data.bin"
    ).read_bytes()


def test_a_half_streamed_pack_of_a_killed_backup_is_swept_after_the_grace_period(
    clocked: ClockedStorage,
) -> None:
    three_machines_days(clocked)
    repository = open_fresh(clocked)
    writer = ImageWriter(repository, machine="vm-9")
    writer.write_disk("disk-0", io.BytesIO(random.Random(78).randbytes(256 * 1024)))
    while writer.chunks._inflight:  # its chunks are written into the open pack's temporary file...
        writer.chunks._place_oldest()
    while writer.chunks._uploads:  # (full packs are committed: they become orphans, swept as before)
        writer.chunks._collect_upload()
    writer.chunks._lease.release()  # ...then the process dies: no commit, its lease expires
    temporaries = list(clocked.root.rglob("*.tmp"))
    assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0
    assert not any(info.key.endswith(".tmp") for info in clocked.list("data/"))  # never listed as an object
    assert prune(open_fresh(clocked), grace=datetime.timedelta(minutes=30)).deleted_temporaries == 0
    clocked.clock += datetime.timedelta(minutes=31)
    assert prune(open_fresh(clocked), grace=datetime.timedelta(minutes=30)).deleted_temporaries == 1
    assert not list(clocked.root.rglob("*.tmp"))
    assert verify(open_fresh(clocked)).ok
