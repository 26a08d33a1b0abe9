"""Image backups: full reads, changed-area incrementals, readers and restores give back exactly what was written."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from engine.image import ImageReader, ImageWriter, restore_image
from engine.repository import Repository
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, PASSPHRASE, backup, make_image


def test_full_backup_restores_bit_identical_and_sparse(repository: Repository, tmp_path: Path) -> None:
    image = make_image(3 * 1024 * 1024 + 123)
    snapshot = backup(repository, image)
    assert snapshot.stats["logical_bytes"] == len(image)
    assert snapshot.stats["zero_bytes"] > 0
    assert snapshot.stats["stored_bytes"] < snapshot.stats["new_bytes"]  # the text-like runs compressed
    target = tmp_path / "restored.img"
    target.write_bytes(b"\xff" * (len(image) + 5000))  # an old, longer file must not leak through holes
    restore_image(repository, snapshot, "disk-0", target)
    assert target.read_bytes() == bytes(image)
    assert target.stat().st_blocks * 512 < len(image)  # zero blocks became holes


def test_a_second_full_read_of_the_same_disk_stores_nothing_new(repository: Repository) -> None:
    image = make_image(2 * 1024 * 1024)
    first = backup(repository, image)
    second = backup(repository, image, parent=first)
    assert second.stats["new_bytes"] == 0
    assert second.disks[0]["tables"] == first.disks[0]["tables"]


def test_a_clone_shares_chunks_with_its_source(repository: Repository) -> None:
    image = make_image(2 * 1024 * 1024)
    backup(repository, image, machine="template")
    clone = bytearray(image)
    clone[BLOCK * 3 : BLOCK * 3 + 10] = b"hostname=2"
    snapshot = backup(repository, clone, machine="clone")
    assert snapshot.stats["new_bytes"] <= 2 * BLOCK + 128 * 1024  # one data block and a table chunk


def test_changed_areas_build_a_full_snapshot_from_a_few_blocks(
    repository: Repository, tmp_path: Path
) -> None:
    rng = random.Random(7)
    image = make_image(4 * 1024 * 1024)
    first = backup(repository, image)
    changes = []
    for offset in sorted(rng.sample(range(0, len(image) - 70_000, 80_000), 12)):
        data = rng.randbytes(rng.randrange(1, 70_000))  # unaligned: blocks are completed from the parent
        changes.append((offset, data))
        image[offset : offset + len(data)] = data
    writer = ImageWriter(repository, machine="vm-1", parent=first)
    writer.write_disk_changes("disk-0", size=len(image), changes=changes, change_id="52 d3 ... 7/12")
    second = writer.commit()
    assert second.disk("disk-0")["change_id"] == "52 d3 ... 7/12"
    assert second.stats["new_bytes"] <= 2 * 12 * BLOCK + 128 * 1024
    restore_image(repository, second, "disk-0", tmp_path / "day2.img")
    assert (tmp_path / "day2.img").read_bytes() == bytes(image)
    # The older point is untouched.
    restore_image(repository, first, "disk-0", tmp_path / "day1.img")
    assert (tmp_path / "day1.img").read_bytes() != bytes(image)


def test_changed_areas_on_a_disk_that_grew(repository: Repository, tmp_path: Path) -> None:
    image = make_image(BLOCK * 5 + 100)
    first = backup(repository, image)
    grown = bytearray(image) + bytes(BLOCK * 3)
    grown[-10:] = b"0123456789"
    writer = ImageWriter(repository, machine="vm-1", parent=first)
    writer.write_disk_changes("disk-0", size=len(grown), changes=[(len(grown) - 10, b"0123456789")])
    snapshot = writer.commit()
    restore_image(repository, snapshot, "disk-0", tmp_path / "grown.img")
    assert (tmp_path / "grown.img").read_bytes() == bytes(grown)


def test_changed_areas_must_be_sorted_and_inside_the_disk(repository: Repository) -> None:
    first = backup(repository, make_image(BLOCK * 4))
    writer = ImageWriter(repository, machine="vm-1", parent=first)
    with pytest.raises(ValueError, match="sorted"):
        writer.write_disk_changes("disk-0", size=BLOCK * 4, changes=[(BLOCK * 2, b"a"), (BLOCK, b"b")])
    with pytest.raises(ValueError, match="beyond the disk size"):
        writer.write_disk_changes("disk-0", size=BLOCK * 4, changes=[(BLOCK * 4 - 1, b"ab")])
    writer.abort()
    assert len(Repository.open(repository.storage, PASSPHRASE).snapshot_ids()) == 1


def test_reader_is_a_seekable_file(repository: Repository) -> None:
    image = make_image(BLOCK * 9 + 77)
    snapshot = backup(repository, image)
    reader = ImageReader(repository, snapshot.disk("disk-0"))
    rng = random.Random(3)
    for _ in range(200):
        offset = rng.randrange(0, len(image))
        length = rng.randrange(0, 3 * BLOCK)
        assert reader.pread(length, offset) == bytes(image[offset : offset + length])
    reader.seek(-77, os.SEEK_END)
    assert reader.read() == bytes(image[-77:])
    assert reader.read(10) == b""
    buffered = io.BufferedReader(reader)  # what the catalog's file-system readers will wrap
    buffered.seek(BLOCK - 3)
    assert buffered.read(6) == bytes(image[BLOCK - 3 : BLOCK + 3])


def test_several_disks_and_writers_at_once(storage: LocalStorage) -> None:
    import threading

    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    images = {f"vm-{n}": make_image(1024 * 1024, seed=n) for n in range(4)}
    results = {}

    def run(machine: str) -> None:
        repository = Repository.open(storage, PASSPHRASE)  # each writer with its own handle, like processes
        results[machine] = backup(repository, images[machine], machine=machine).id

    threads = [threading.Thread(target=run, args=(machine,)) for machine in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fresh = Repository.open(storage, PASSPHRASE)
    for machine, snapshot_id in results.items():
        reader = ImageReader(fresh, fresh.load_snapshot(snapshot_id).disk("disk-0"))
        assert reader.read() == bytes(images[machine])


def test_changed_areas_on_a_disk_that_shrank(repository: Repository, tmp_path: Path) -> None:
    image = make_image(BLOCK * 6)
    first = backup(repository, image)
    shrunk = bytearray(image[: BLOCK * 3 + 500])
    writer = ImageWriter(repository, machine="vm-1", parent=first)
    writer.write_disk_changes("disk-0", size=len(shrunk), changes=[])
    snapshot = writer.commit()
    restore_image(repository, snapshot, "disk-0", tmp_path / "shrunk.img")
    assert (tmp_path / "shrunk.img").read_bytes() == bytes(shrunk)


def test_changed_areas_read_whole_blocks_from_the_source(repository: Repository, tmp_path: Path) -> None:
    rng = random.Random(12)
    image = make_image(2 * 1024 * 1024 + 999)
    first = backup(repository, image)
    areas = []
    for offset in [*sorted(rng.sample(range(0, len(image) - 5000, 50000), 10)), len(image) - 10]:
        length = min(rng.randrange(1, 5000), len(image) - offset)
        image[offset : offset + length] = rng.randbytes(length)
        areas.append((offset, length))
    source = tmp_path / "day2.img"
    source.write_bytes(bytes(image))
    reads = []
    real_read_chunk = repository.read_chunk

    def counting_read_chunk(chunk_id: bytes) -> bytes:
        reads.append(chunk_id)
        return real_read_chunk(chunk_id)

    repository.read_chunk = counting_read_chunk  # type: ignore[method-assign]
    writer = ImageWriter(repository, machine="vm-1", parent=first)
    with open(source, "rb") as handle:
        writer.write_disk_areas("disk-0", handle, size=len(image), areas=areas)
    snapshot = writer.commit()
    assert len(reads) == len(first.disk("disk-0")["tables"])  # only the parent's block table, no data block
    repository.read_chunk = real_read_chunk  # type: ignore[method-assign]
    restore_image(repository, snapshot, "disk-0", tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == bytes(image)


def test_changed_areas_from_a_stream_in_any_order_on_a_grown_disk(
    repository: Repository, tmp_path: Path
) -> None:
    """Connectors hand over HTTP range readers (no file descriptor), CBT lists that touch a block several
    times, and disks that grew since the parent."""
    image = make_image(BLOCK * 5 + 123)
    first = backup(repository, image)
    grown = image + bytearray(b"\x07" * (BLOCK * 2))
    grown[BLOCK * 3 + 5 : BLOCK * 3 + 9] = b"edit"
    grown[BLOCK * 3 + 100 : BLOCK * 3 + 104] = b"more"
    areas = [(BLOCK * 3 + 100, 4), (BLOCK * 3 + 5, 4), (BLOCK * 3, BLOCK), (len(image), BLOCK * 2)]
    writer = ImageWriter(repository, machine="vm-1", parent=first)
    disk = writer.write_disk_areas("disk-0", io.BytesIO(bytes(grown)), size=len(grown), areas=areas)
    snapshot = writer.commit()
    assert disk["stats"]["new_bytes"] <= BLOCK * 4  # block 3, the old last block, and the two new ones
    restore_image(repository, snapshot, "disk-0", tmp_path / "grown.img")
    assert (tmp_path / "grown.img").read_bytes() == bytes(grown)
    with pytest.raises(ValueError, match="outside the disk"):
        ImageWriter(repository, machine="vm-1", parent=snapshot).write_disk_areas(
            "disk-0", io.BytesIO(bytes(grown)), size=len(grown), areas=[(len(grown) - 1, 2)]
        )


def test_separate_processes_write_while_another_reads(storage: LocalStorage, tmp_path: Path) -> None:
    import subprocess
    import sys

    Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    base = make_image(2 * 1024 * 1024, seed=50)
    reference = backup(Repository.open(storage, PASSPHRASE), base)
    images = []
    for number in range(2):
        path = tmp_path / f"writer-{number}.img"  # machine names distinct from the reference's "vm-1"
        path.write_bytes(bytes(make_image(2 * 1024 * 1024, seed=60 + number)))
        images.append(path)
    root = Path(__file__).resolve().parents[2]
    env = {"BULWARK_PASSPHRASE": PASSPHRASE, "PATH": os.environ.get("PATH", "")}
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "--repo",
                str(storage.root),
                "backup-image",
                str(path),
                "--machine",
                path.stem,
                "--json",
            ],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in images
    ]
    # Meanwhile this process reads the reference snapshot, again and again, while packs and indexes appear.
    reader_repository = Repository.open(storage, PASSPHRASE)
    while any(writer.poll() is None for writer in writers):
        assert ImageReader(reader_repository, reference.disk("disk-0")).read() == bytes(base)
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read() if writer.stderr else ""
    fresh = Repository.open(storage, PASSPHRASE)
    by_machine = {s.machine: s for s in fresh.snapshots()}
    for path in images:
        snapshot = by_machine[path.stem]
        assert ImageReader(fresh, snapshot.disk(snapshot.disks[0]["name"])).read() == path.read_bytes()
    from engine.maintenance import verify

    assert verify(fresh, full=True).ok
