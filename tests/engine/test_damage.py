"""Damage is found by verify, named precisely, and never restored silently."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from engine.errors import EngineError, IntegrityError, ObjectMissing, StorageError
from engine.image import ImageReader, restore_image
from engine.maintenance import rebuild_index, verify
from engine.repository import Repository, Snapshot
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, PASSPHRASE, SMALL_PACK, backup, make_image


@pytest.fixture
def two_points(repository: Repository) -> tuple[Repository, list[Snapshot], bytearray, bytearray]:
    first_image = make_image(2 * 1024 * 1024, seed=11)
    second_image = bytearray(first_image)
    second_image[100_000:400_000] = random.Random(5).randbytes(300_000)
    first = backup(repository, first_image)
    second = backup(repository, second_image, parent=first)
    return repository, [first, second], first_image, second_image


def flip(storage: LocalStorage, key: str, rng: random.Random, count: int = 1, start: int = 0) -> list[int]:
    path = storage.root / key
    data = bytearray(path.read_bytes())
    offsets = [rng.randrange(start, len(data)) for _ in range(count)]
    for offset in offsets:
        data[offset] ^= rng.randrange(1, 256)  # XOR with a non-zero value: the byte really changes
    path.write_bytes(bytes(data))
    return offsets


def restores(repository: Repository, snapshot: Snapshot, image: bytes, target: Path) -> bool:
    """True when the snapshot restores bit-identical; False when restore refuses. Never wrong bytes."""
    try:
        restore_image(repository, snapshot, "disk-0", target)
    except EngineError:
        return False
    assert target.read_bytes() == bytes(image), "restore returned wrong bytes without an error"
    return True


def test_a_healthy_repository_verifies_clean(two_points) -> None:  # type: ignore[no-untyped-def]
    repository, _snapshots, _, _ = two_points
    report = verify(repository, full=True)
    assert report.ok, [str(p) for p in report.problems]
    assert report.snapshots == 2 and report.chunks_checked > 0


@pytest.mark.parametrize("seed", range(12))
def test_flipped_bytes_in_packs_are_reported_and_never_restored(
    two_points, tmp_path: Path, seed: int
) -> None:  # type: ignore[no-untyped-def]
    repository, snapshots, first_image, second_image = two_points
    rng = random.Random(seed)
    storage: LocalStorage = repository.storage  # type: ignore[assignment]
    pack = rng.choice([info.key for info in storage.list("data/")])
    flip(storage, pack, rng, count=rng.randrange(1, 4))
    report = verify(Repository.open(storage, PASSPHRASE), full=True)
    assert not report.ok
    assert all(pack in problem.object for problem in report.errors), [str(p) for p in report.errors]
    fresh = Repository.open(storage, PASSPHRASE)
    for snapshot, image in zip(snapshots, (first_image, second_image), strict=True):
        restored = restores(fresh, snapshot, image, tmp_path / f"{snapshot.id}.img")
        assert restored == (snapshot.id not in report.damaged_snapshots), str(report.errors)


@pytest.mark.parametrize("prefix", ["index/", "snapshots/"])
@pytest.mark.parametrize("seed", range(4))
def test_flipped_bytes_in_index_files_and_manifests_are_reported(two_points, prefix: str, seed: int) -> None:  # type: ignore[no-untyped-def]
    repository, _, _, _ = two_points
    rng = random.Random(seed)
    storage: LocalStorage = repository.storage  # type: ignore[assignment]
    key = rng.choice([info.key for info in storage.list(prefix)])
    flip(storage, key, rng)
    report = verify(Repository.open(storage, PASSPHRASE), full=False)
    assert any(problem.object == key or key in str(problem) for problem in report.errors), [
        str(p) for p in report.problems
    ]


def test_missing_truncated_and_empty_packs_are_named(two_points, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repository, snapshots, _first_image, _ = two_points
    storage: LocalStorage = repository.storage  # type: ignore[assignment]
    packs = sorted(info.key for info in storage.list("data/"))
    assert len(packs) >= 3, "make the test image larger or the packs smaller"
    (storage.root / packs[0]).unlink()
    with open(storage.root / packs[1], "r+b") as handle:
        handle.truncate(100)
    (storage.root / packs[2]).write_bytes(b"")
    report = verify(Repository.open(storage, PASSPHRASE))
    kinds = {(problem.kind, problem.object) for problem in report.errors}
    assert ("missing-pack", packs[0]) in kinds
    assert ("pack-size", packs[1]) in kinds
    assert ("pack-size", packs[2]) in kinds
    with pytest.raises((ObjectMissing, IntegrityError)):
        ImageReader(Repository.open(storage, PASSPHRASE), snapshots[0].disk("disk-0")).read()


def test_a_lost_index_is_rebuilt_from_the_packs(two_points, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repository, snapshots, first_image, second_image = two_points
    storage: LocalStorage = repository.storage  # type: ignore[assignment]
    for info in list(storage.list("index/")):
        storage.delete(info.key)
    broken = verify(Repository.open(storage, PASSPHRASE))
    assert {p.kind for p in broken.errors} == {"missing-chunk"}
    assert broken.damaged_snapshots == {s.id for s in snapshots}

    fresh = Repository.open(storage, PASSPHRASE)
    result = rebuild_index(fresh)
    assert result.unreadable_packs == [] and result.index_files_written == 1
    assert verify(Repository.open(storage, PASSPHRASE), full=True).ok
    for snapshot, image in zip(snapshots, (first_image, second_image), strict=True):
        assert restores(
            Repository.open(storage, PASSPHRASE), snapshot, image, tmp_path / f"{snapshot.id}.img"
        )


def test_repair_keeps_intact_snapshots_and_names_the_damaged(two_points, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repository, snapshots, first_image, second_image = two_points
    storage: LocalStorage = repository.storage  # type: ignore[assignment]
    # Damage the pack header of one pack that only the second snapshot needs, and lose the index too.
    second_only = _packs_only_used_by(repository, snapshots[1], snapshots[0])
    assert second_only, "the day-2 changes should live in packs of their own"
    flip(storage, second_only[0], random.Random(1), count=3)
    (storage.root / second_only[0]).write_bytes((storage.root / second_only[0]).read_bytes()[:-40])
    for info in list(storage.list("index/")):
        storage.delete(info.key)
    result = rebuild_index(Repository.open(storage, PASSPHRASE))
    assert result.unreadable_packs == [second_only[0]]
    report = verify(Repository.open(storage, PASSPHRASE), full=True)
    assert report.damaged_snapshots == {snapshots[1].id}
    fresh = Repository.open(storage, PASSPHRASE)
    assert restores(fresh, snapshots[0], first_image, tmp_path / "first.img")
    assert not restores(fresh, snapshots[1], second_image, tmp_path / "second.img")


def _packs_only_used_by(repository: Repository, snapshot: Snapshot, other: Snapshot) -> list[str]:
    from engine.image import load_table
    from engine.repository import pack_key

    def packs_of(s: Snapshot) -> set[str]:
        table = load_table(repository, s.disk("disk-0"))
        ids = {table[i : i + 32] for i in range(0, len(table), 32)} | {
            bytes.fromhex(t) for t in s.disk("disk-0")["tables"]
        }
        return {pack_key(loc.pack.name) for i in ids if (loc := repository.index.lookup(i)) is not None}

    return sorted(packs_of(snapshot) - packs_of(other))


def test_an_emptied_index_file_is_named_and_the_index_rebuilds(two_points, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repository, snapshots, _, second_image = two_points
    storage: LocalStorage = repository.storage  # type: ignore[assignment]
    emptied = sorted(info.key for info in storage.list("index/"))[0]
    (storage.root / emptied).write_bytes(b"")
    report = verify(Repository.open(storage, PASSPHRASE))
    assert ("index-unreadable", emptied) in {(p.kind, p.object) for p in report.errors}
    rebuild_index(Repository.open(storage, PASSPHRASE))
    assert verify(Repository.open(storage, PASSPHRASE), full=True).ok
    assert restores(Repository.open(storage, PASSPHRASE), snapshots[1], second_image, tmp_path / "day2.img")


class LosingStorage(LocalStorage):
    """Storage that acknowledges writes it then loses: dropped entirely, or kept as zero bytes."""

    def __init__(self, root: Path, how: str) -> None:
        super().__init__(root)
        self.how = how
        self.losing = False

    def put(self, key: str, data: bytes, **options: Any) -> None:
        if self.losing and key.startswith(("data/", "index/", "snapshots/")):
            if self.how == "zero":
                super().put(key, b"", **options)
            return  # "dropped": acknowledged, never stored
        super().put(key, data, **options)

    def open_writer(self, key: str) -> Any:
        writer = super().open_writer(key)
        if self.losing:
            commit = writer.commit

            def lose() -> None:
                commit()
                if self.how == "zero":
                    os.truncate(writer.path, 0)
                else:
                    os.unlink(writer.path)

            writer.commit = lose
        return writer


@pytest.mark.parametrize("how", ["dropped", "zero"])
def test_writes_the_storage_loses_are_caught_before_any_manifest_names_them(tmp_path: Path, how: str) -> None:
    storage = LosingStorage(tmp_path / "repo", how)
    repository = Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    repository.upload_retry_delay = 0.0
    image = make_image(512 * 1024, seed=77)
    storage.losing = True
    with pytest.raises(StorageError, match="not stored intact"):
        backup(repository, image)
    assert repository.snapshot_ids() == []
    storage.losing = False
    fresh = Repository.open(storage, PASSPHRASE)
    fresh.pack_target = SMALL_PACK
    snapshot = backup(fresh, image)
    target = tmp_path / "restored.raw"
    restore_image(fresh, fresh.load_snapshot(snapshot.id), "disk-0", target)
    assert target.read_bytes() == bytes(image)
    assert verify(Repository.open(storage, PASSPHRASE), full=True).ok


def test_a_later_backup_heals_what_verify_found_damaged(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    repository = Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    image = make_image(512 * 1024, seed=91)
    first = backup(repository, image)
    # One pack loses a byte on disk; another disappears.
    packs = sorted(storage.list("data/"), key=lambda info: info.key)
    damaged_path = storage.root / packs[0].key
    data = bytearray(damaged_path.read_bytes())
    data[100] ^= 0x01
    damaged_path.write_bytes(bytes(data))
    (storage.root / packs[1].key).unlink()
    found = verify(Repository.open(storage, PASSPHRASE), full=True, record=True)
    assert first.id in found.damaged_snapshots
    # The machine is backed up again (same content): the damaged and missing chunks are stored again.
    worker = Repository.open(storage, PASSPHRASE)
    worker.pack_target = SMALL_PACK
    second = backup(worker, image)
    assert second.stats["new_bytes"] > 0
    after = verify(Repository.open(storage, PASSPHRASE), full=True)
    assert after.ok, [str(problem) for problem in after.errors]
    assert any("healed" in problem.detail for problem in after.problems)
    for snapshot in (first, second):  # the old snapshot reads its chunks from the new copies too
        target = tmp_path / f"{snapshot.id}.raw"
        restore_image(Repository.open(storage, PASSPHRASE), snapshot, "disk-0", target)
        assert target.read_bytes() == bytes(image)
    # Prune removes the damaged copies (and their records) once healed; everything still restores.
    import datetime

    from engine.prune import prune

    prune(Repository.open(storage, PASSPHRASE), grace=datetime.timedelta(0))
    prune(Repository.open(storage, PASSPHRASE), grace=datetime.timedelta(0))
    final = Repository.open(storage, PASSPHRASE)
    assert verify(final, full=True).ok
    assert storage.stat(packs[0].key) is None
    target = tmp_path / "final.raw"
    restore_image(final, final.load_snapshot(first.id), "disk-0", target)
    assert target.read_bytes() == bytes(image)
