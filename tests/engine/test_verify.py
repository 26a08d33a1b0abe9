"""verify never says ok when a restore would fail, and never crashes on what it reads: index entries are held
against pack headers, every chunk against the length and kind its place needs, forged manifests and trees are
reported, and a tree shared many times is read once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine import format as fmt
from engine.files import FileTreeWriter
from engine.maintenance import verify
from engine.repository import Repository, Snapshot, new_snapshot_id, now_utc
from engine.storage.local import LocalStorage
from tests.engine.helpers import PASSPHRASE, backup, make_image


def rewrite_index(repository: Repository, change) -> None:  # type: ignore[no-untyped-def]
    """Replace every index file by one whose entries went through change(packs)."""
    keys = [info.key for info in repository.storage.list("index/")]
    packs = [pack for key in keys for pack in repository.read_index_file(key)]
    repository.write_index_file(change(packs))
    for key in keys:
        repository.storage.delete(key)
    repository.forget_cached_index()


def fresh(storage: LocalStorage) -> Repository:
    return Repository.open(storage, PASSPHRASE)


def test_an_index_entry_pointing_at_another_chunks_blob_is_found(
    repository: Repository, storage: LocalStorage
) -> None:
    snapshot = backup(repository, make_image(512 * 1024, seed=1))
    assert verify(fresh(storage), full=True).ok

    def swap(packs):  # type: ignore[no-untyped-def]
        entries = next(e for _, e in packs if len(e) >= 2)
        first, second = entries[0], entries[1]
        entries[0] = fmt.PackEntry(
            first.chunk_id,
            second.flags,
            second.offset,
            second.stored_length,
            second.raw_length,
            second.counter,
        )
        return packs

    rewrite_index(repository, swap)
    report = verify(fresh(storage), full=True)
    assert not report.ok
    assert any(p.kind == "index-mismatch" for p in report.errors)
    assert snapshot.id in report.damaged_snapshots


def test_an_index_entry_placing_a_chunk_in_a_pack_without_it_is_found(
    repository: Repository, storage: LocalStorage
) -> None:
    snapshot = backup(repository, make_image(512 * 1024, seed=2))

    def move(packs):  # type: ignore[no-untyped-def]
        entries_a, entries_b = packs[0][1], packs[1][1]
        entries_b.append(entries_a.pop(0))  # the index now says it is in pack b
        return packs

    rewrite_index(repository, move)
    report = verify(fresh(storage), full=True)
    assert any(p.kind == "index-mismatch" and "does not list it" in p.detail for p in report.errors)
    assert snapshot.id in report.damaged_snapshots


def commit_tree(repository: Repository, tree: bytes) -> Snapshot:
    """A manifest naming a forged tree chunk (stored properly, as metadata)."""
    with repository.writer() as writer:
        tree_id = writer.add(tree, meta=True)
        writer.flush()
    when = now_utc()
    snapshot = Snapshot(
        new_snapshot_id(when), "files", when.isoformat(), "h", "m", [], None, tree=tree_id.hex()
    )
    repository.commit_snapshot(snapshot)
    return snapshot


def test_forged_trees_are_reported_not_crashed_on(repository: Repository, storage: LocalStorage) -> None:
    forged = [
        b"\xff\xfe not utf-8",
        json.dumps({"entries": "not a list"}).encode(),
        json.dumps({"entries": [["not", "an", "object"]]}).encode(),
        json.dumps({"entries": [{"name": "d", "type": "dir"}]}).encode(),
        json.dumps({"entries": [{"name": "f", "type": "file", "chunks": ["zz"]}]}).encode(),
        json.dumps({"entries": [{"name": "f", "type": "file", "chunks": 7}]}).encode(),
    ]
    snapshots = {commit_tree(repository, tree).id for tree in forged}
    report = verify(fresh(storage), full=True)
    assert report.damaged_snapshots == snapshots


def test_a_malformed_manifest_is_reported(repository: Repository, storage: LocalStorage) -> None:
    good = backup(repository, make_image(256 * 1024, seed=3))
    disk = repository.load_snapshot(good.id).disks[0]
    when = now_utc()
    for broken in ({**disk, "tables": disk["tables"] * 2}, {**disk, "size": "big"}, {"name": "x"}):
        repository.commit_snapshot(
            Snapshot(new_snapshot_id(when), "image", when.isoformat(), "h", "m", [], None, disks=[broken])
        )
    report = verify(fresh(storage))
    assert len(report.damaged_snapshots) == 3 and good.id not in report.damaged_snapshots


def test_a_block_table_used_as_file_data_is_found(
    repository: Repository, storage: LocalStorage, tmp_path: Path
) -> None:
    image = backup(repository, make_image(256 * 1024, seed=4))
    table = repository.load_snapshot(image.id).disks[0]["tables"][0]
    entry = {"name": "f", "type": "file", "size": 10, "chunks": [table], "mode": 420, "uid": 0, "gid": 0}
    entry.update(mtime_ns=0, atime_ns=0)
    forged = commit_tree(repository, json.dumps({"version": 1, "entries": [entry]}).encode())
    report = verify(fresh(storage))
    assert forged.id in report.damaged_snapshots
    assert any(p.kind == "chunk-mismatch" for p in report.errors)


def test_a_block_of_the_wrong_length_is_found(repository: Repository, storage: LocalStorage) -> None:
    image = make_image(256 * 1024, seed=5)
    snapshot = backup(repository, image)
    disk = repository.load_snapshot(snapshot.id).disks[0]
    when = now_utc()
    # Claims a disk one block longer: the last real block now stands where a shorter tail block must be.
    longer = {**disk, "size": disk["size"] - 1000}
    forged = Snapshot(new_snapshot_id(when), "image", when.isoformat(), "h", "m", [], None, disks=[longer])
    repository.commit_snapshot(forged)
    report = verify(fresh(storage))
    assert report.damaged_snapshots == {forged.id}


class CountingStorage(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets = 0

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self.gets += 1
        return super().get(key, offset, length)


def test_a_tree_shared_by_many_folders_is_read_once(repository: Repository, storage: LocalStorage) -> None:
    """15 distinct trees, each holding the next one twice: 32,767 folders, 15 reads."""
    with repository.writer() as writer:
        child: str | None = None
        for depth in range(15):
            entries = []
            if child is not None:
                entries = [{"name": name, "type": "dir", "tree": child, "mode": 493} for name in ("a", "b")]
            child = writer.add(
                json.dumps({"version": 1, "entries": entries, "depth": depth}).encode(), meta=True
            ).hex()
        writer.flush()
    when = now_utc()
    repository.commit_snapshot(
        Snapshot(new_snapshot_id(when), "files", when.isoformat(), "h", "m", [], None, tree=child)
    )
    counting = CountingStorage(storage.root)
    report = verify(Repository.open(counting, PASSPHRASE))
    assert report.ok
    assert counting.gets < 100


def test_temporary_files_are_mentioned(repository: Repository, storage: LocalStorage, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    source.mkdir()
    (source / "f").write_bytes(os.urandom(1000))
    FileTreeWriter(repository, machine="h").write(source)
    (storage.root / "data" / "ab").mkdir(parents=True, exist_ok=True)
    (storage.root / "data" / "ab" / ".abcd.1234.tmp").write_bytes(b"x" * 5000)
    report = verify(fresh(storage))
    assert report.ok
    assert any(p.kind == "temporary-files" and "1 temporary" in p.detail for p in report.problems)
