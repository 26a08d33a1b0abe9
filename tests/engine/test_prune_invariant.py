"""The prune invariant: no snapshot ever references a chunk a prune has deleted, however long a writer keeps the
repository open, whatever runs beside it (another process, rebuild-index, a repack) and whatever the grace."""

from __future__ import annotations

import datetime
import io
import os
import threading
import time
from pathlib import Path

import pytest

from engine.errors import LockedError
from engine.files import FileTreeWriter, restore_tree
from engine.image import ImageWriter, restore_image
from engine.locks import live_leases
from engine.maintenance import rebuild_index, verify
from engine.prune import prune
from engine.repository import Repository
from engine.storage import ObjectInfo
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, PASSPHRASE, SMALL_PACK, backup, make_image
from tests.engine.helpers import engine_cli as cli

NO_GRACE = datetime.timedelta(0)


def opened(storage: LocalStorage) -> Repository:
    repository = Repository.open(storage, PASSPHRASE)
    repository.pack_target = SMALL_PACK
    return repository


def engine_cli(storage: LocalStorage, *args: str) -> str:
    result = cli(storage.root, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def restored(repository: Repository, snapshot_id: str, tmp_path: Path) -> bytes:
    target = tmp_path / f"restore-{snapshot_id}.raw"
    restore_image(repository, repository.load_snapshot(snapshot_id), "disk-0", target)
    return target.read_bytes()


def test_a_worker_that_stays_open_never_commits_chunks_another_process_pruned(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    worker = repository  # a proxy: opened once, kept open between runs
    image = make_image(1024 * 1024, seed=7)
    old = backup(worker, image, machine="vm-old")
    # Another process forgets the snapshot and prunes twice (set aside, then delete) with no grace.
    engine_cli(storage, "forget", old.id)
    engine_cli(storage, "prune", "--grace-minutes", "0")
    engine_cli(storage, "prune", "--grace-minutes", "0")
    assert not list(storage.list("pending/")), "the second prune deleted the set-aside packs"
    # The long-lived worker backs up the same content: it must store it again, not reference the pruned packs.
    new = backup(worker, image, machine="vm-new")
    assert restored(opened(storage), new.id, tmp_path) == bytes(image)
    assert verify(opened(storage), full=True).ok


def test_a_prune_finished_while_a_backup_ran_cannot_delete_what_the_backup_reused(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    image = make_image(1024 * 1024, seed=8)
    old = backup(repository, image, machine="vm-old")
    writer = ImageWriter(repository, machine="vm-new")  # lease taken, index loaded: the old packs are live
    engine_cli(storage, "forget", old.id)
    engine_cli(storage, "prune", "--grace-minutes", "0")  # sets them aside while the backup runs
    writer.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))  # deduplicates against them
    # A prune now must wait for the backup: its lease began before those packs left the index.
    assert prune(opened(storage), grace=NO_GRACE).deleted_packs == []
    snapshot = writer.commit()
    prune(opened(storage), grace=NO_GRACE)  # resurrects the packs the new snapshot uses
    prune(opened(storage), grace=NO_GRACE)
    assert restored(opened(storage), snapshot.id, tmp_path) == bytes(image)
    assert verify(opened(storage), full=True).ok


def test_rebuild_index_leaves_packs_prune_set_aside_out_of_the_index(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    image = make_image(1024 * 1024, seed=9)
    old = backup(repository, image, machine="vm-old")
    repository.forget_snapshot(old.id)
    assert prune(opened(storage), grace=NO_GRACE).marked_packs  # set aside
    report = rebuild_index(opened(storage))
    assert report.set_aside_packs > 0
    worker = opened(storage)
    new = backup(worker, image, machine="vm-new")  # must not deduplicate against the set-aside packs
    prune(opened(storage), grace=NO_GRACE)
    prune(opened(storage), grace=NO_GRACE)
    assert restored(opened(storage), new.id, tmp_path) == bytes(image)
    assert verify(opened(storage), full=True).ok


def test_an_incremental_stores_again_the_parent_blocks_prune_has_set_aside(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    """A parent committed by a writer that deduplicated against packs a prune was setting aside refers into
    them; a child that takes the parent's unchanged blocks must not leave those blocks to a set-aside pack."""
    image = make_image(1024 * 1024, seed=10)
    old = backup(repository, image, machine="vm-old")
    writer = ImageWriter(repository, machine="vm-1")  # the parent's backup begins: old packs are live to it
    repository.forget_snapshot(old.id)
    prune(opened(storage), grace=NO_GRACE)  # sets them aside while the parent's backup runs
    writer.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))
    parent = writer.commit()
    # The child runs with the packs still set aside, then the parent is forgotten before the child commits.
    child_image = bytearray(image)
    child_image[:BLOCK] = os.urandom(BLOCK)
    child = ImageWriter(opened(storage), machine="vm-1", parent=parent)
    child.write_disk_areas("disk-0", io.BytesIO(bytes(child_image)), size=len(image), areas=[(0, BLOCK)])
    storage.delete(f"snapshots/{parent.id}")
    # The child's lease began after the packs left the index, so nothing protects them but the child's copy.
    prune(opened(storage), grace=NO_GRACE)
    snapshot = child.commit()
    prune(opened(storage), grace=NO_GRACE)
    assert restored(opened(storage), snapshot.id, tmp_path) == bytes(child_image)
    assert verify(opened(storage), full=True).ok


def test_unchanged_files_keep_no_reference_into_a_set_aside_pack(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    source = tmp_path / "tree"
    source.mkdir()
    (source / "big.bin").write_bytes(os.urandom(600_000))
    old = FileTreeWriter(repository, machine="old").write(source)
    writer = FileTreeWriter(repository, machine="host")
    repository.forget_snapshot(old.id)
    prune(opened(storage), grace=NO_GRACE)
    parent = writer.write(source)  # deduplicated against the set-aside packs
    child = FileTreeWriter(opened(storage), machine="host", parent=parent)
    storage.delete(f"snapshots/{parent.id}")
    prune(opened(storage), grace=NO_GRACE)
    snapshot = child.write(source)  # the file is unchanged: its chunk ids come from the parent
    prune(opened(storage), grace=NO_GRACE)
    prune(opened(storage), grace=NO_GRACE)
    fresh = opened(storage)
    restore_tree(fresh, fresh.load_snapshot(snapshot.id), tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    assert verify(fresh, full=True).ok


def test_concurrent_backups_survive_prunes_without_grace(storage: LocalStorage, tmp_path: Path) -> None:
    """Packs written just after a lease began are not taken for a killed backup's orphans (coarse file
    times against precise lease times), with no grace at all."""
    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    images = [make_image(160 * 1024, seed=20 + n) for n in range(24)]
    committed: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def back_up(number: int) -> None:
        try:
            committed.append(
                (backup(opened(storage), images[number], machine=f"vm-{number}").id, images[number])
            )
        except BaseException as error:  # reported by the test
            errors.append(error)

    def pruning() -> None:
        pruner = opened(storage)
        while not stop.is_set():
            try:
                prune(pruner, grace=NO_GRACE)
            except LockedError:
                pass
            except BaseException as error:  # reported by the test
                errors.append(error)
                return

    pruner = threading.Thread(target=pruning)
    pruner.start()
    for first in range(0, len(images), 4):  # four at a time, so many start while prunes run
        workers = [threading.Thread(target=back_up, args=(n,)) for n in range(first, first + 4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    stop.set()
    pruner.join()
    assert not errors
    prune(opened(storage), grace=NO_GRACE)
    prune(opened(storage), grace=NO_GRACE)
    fresh = opened(storage)
    for snapshot_id, image in committed:
        assert restored(fresh, snapshot_id, tmp_path) == bytes(image)
    assert verify(fresh, full=True).ok


class CoarseClockStorage(LocalStorage):
    """A folder on a file system with whole-second times (ext3, FAT, some NFS servers; S3 too)."""

    def stat(self, key: str) -> ObjectInfo | None:
        info = super().stat(key)
        return None if info is None else ObjectInfo(info.key, info.size, info.modified.replace(microsecond=0))


def test_grace_zero_never_takes_a_just_started_backups_packs_for_orphans(tmp_path: Path) -> None:
    storage = CoarseClockStorage(tmp_path / "repo")
    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    image = make_image(256 * 1024, seed=21)
    time.sleep(1.05 - time.time() % 1)  # early in a second: the lease and the packs share it
    writer = ImageWriter(opened(storage), machine="vm-1")
    writer.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))
    writer.chunks.store_packs()  # stored, not yet indexed: what a prune meets mid-backup
    assert prune(opened(storage), grace=NO_GRACE).deleted_orphans == []
    snapshot = writer.commit()
    assert restored(opened(storage), snapshot.id, tmp_path) == bytes(image)


def test_reads_follow_chunks_another_process_repacked(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    reader = repository
    keep = make_image(512 * 1024, seed=30)
    other = make_image(512 * 1024, seed=31)
    mixed = bytearray()
    for offset in range(0, len(keep), BLOCK):  # packs that hold blocks of both
        mixed += keep[offset : offset + BLOCK] + other[offset : offset + BLOCK]
    gone = backup(reader, mixed, machine="gone")
    kept_image = bytearray()
    for offset in range(0, len(mixed), 2 * BLOCK):
        kept_image += mixed[offset : offset + BLOCK] + bytes(BLOCK)
    kept = backup(reader, kept_image, machine="keep")  # uses every other block of the gone snapshot's packs
    assert reader.index  # loaded: the reader knows today's locations
    engine_cli(storage, "forget", gone.id)
    first = engine_cli(storage, "prune", "--grace-minutes", "0", "--json")
    assert '"repacked_packs": []' not in first  # the shared packs were repacked
    engine_cli(storage, "prune", "--grace-minutes", "0")  # and the old ones deleted
    assert restored(reader, kept.id, tmp_path) == bytes(kept_image)


def test_a_prune_in_the_same_process_keeps_a_running_backups_index_readable(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    repository.index_checkpoint_seconds = 0.0  # an index file after every pack
    image = make_image(1024 * 1024, seed=40)
    writer = ImageWriter(repository, machine="vm-1")
    writer.write_disk("disk-0", io.BytesIO(bytes(image[: len(image) // 2])), size=len(image) // 2)
    rebuild_index(repository)  # on the same Repository object, while the backup is in flight
    writer.write_disk("disk-1", io.BytesIO(bytes(image[len(image) // 2 :])), size=len(image) // 2)
    snapshot = writer.commit()
    target = tmp_path / "disk-1.raw"
    restore_image(repository, repository.load_snapshot(snapshot.id), "disk-1", target)
    assert target.read_bytes() == bytes(image[len(image) // 2 :])


def test_a_writer_whose_lease_lapsed_commits_nothing(repository: Repository, storage: LocalStorage) -> None:
    image = make_image(256 * 1024, seed=50)
    writer = ImageWriter(repository, machine="vm-1")
    writer.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))
    lease = writer.chunks._lease
    assert lease is not None
    lease._confirmed -= lease.seconds  # as if the process had been stopped for the lease's whole life
    with pytest.raises(LockedError, match="lapsed"):
        writer.commit()
    writer.abort()
    assert repository.snapshot_ids() == []
    assert not live_leases(storage)


def test_an_aborted_backup_indexes_what_it_stored(repository: Repository, storage: LocalStorage) -> None:
    image = make_image(1024 * 1024, seed=60)
    writer = ImageWriter(repository, machine="vm-1")
    writer.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))
    writer.chunks.store_packs()
    writer.abort()
    report = verify(opened(storage))
    assert not [problem for problem in report.problems if problem.kind == "unindexed-pack"]
    again = ImageWriter(opened(storage), machine="vm-1")
    again.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))
    assert again.chunks.stats.new_bytes < len(image) // 20  # reused, not stored again
    again.abort()


def test_the_local_clock_is_the_file_servers(storage: LocalStorage, tmp_path: Path) -> None:
    storage.root.mkdir(parents=True, exist_ok=True)
    before = time.time()
    stamp = storage.now().timestamp()
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    assert abs(stamp - probe.stat().st_mtime) < 1.0
    assert abs(stamp - before) < 5.0
    assert not [name for name in os.listdir(storage.root) if name.startswith(".clock")]


def test_a_file_chunk_equal_to_a_tree_does_not_stop_that_trees_walk(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    """Prune reads each tree once over all snapshots; a chunk met as file data first (here a file whose bytes
    are exactly a folder's tree) must not count as a tree already walked."""
    import json

    from engine.repository import Snapshot

    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f.bin").write_bytes(os.urandom(300_000))
    kept = FileTreeWriter(repository, machine="host").write(source)
    root = json.loads(repository.read_chunk(bytes.fromhex(kept.tree or "")))
    sub_tree = next(entry["tree"] for entry in root["entries"] if entry["name"] == "sub")
    entry = {"name": "x", "type": "file", "size": 1, "chunks": [sub_tree], "mode": 420, "uid": 0, "gid": 0}
    entry.update(mtime_ns=0, atime_ns=0)
    with repository.writer() as writer:
        tree = writer.add(json.dumps({"version": 1, "entries": [entry]}).encode(), meta=True).hex()
        writer.flush()
    # Sorts before the kept snapshot, so prune walks it first.
    repository.commit_snapshot(
        Snapshot(
            "20000101T000000Z-00000000", "files", "2000-01-01T00:00:00+00:00", "h", "m", [], None, tree=tree
        )
    )
    prune(opened(storage), grace=NO_GRACE)
    prune(opened(storage), grace=NO_GRACE)
    fresh = opened(storage)
    restore_tree(fresh, fresh.load_snapshot(kept.id), tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "f.bin").read_bytes() == (source / "sub" / "f.bin").read_bytes()
