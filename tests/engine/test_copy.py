"""Copying snapshots to another repository (another tier): identical restores, no duplicate storage."""

from __future__ import annotations

from pathlib import Path

from engine.copy import copy_snapshot
from engine.files import FileTreeWriter, restore_tree
from engine.image import restore_image
from engine.maintenance import verify
from engine.repository import Repository
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, backup, make_image


def test_image_and_file_snapshots_copy_to_another_repository(repository: Repository, tmp_path: Path) -> None:
    archive = Repository.init(LocalStorage(tmp_path / "archive"), "another passphrase", block_size=BLOCK)
    image = make_image(1024 * 1024, seed=3)
    first = backup(repository, image)
    copied, stats = copy_snapshot(repository, archive, first)
    assert copied.id == first.id and stats.new_bytes > 0
    restore_image(archive, archive.load_snapshot(first.id), "disk-0", tmp_path / "copy.img")
    assert (tmp_path / "copy.img").read_bytes() == bytes(image)

    image[5000:6000] = b"x" * 1000
    second = backup(repository, image, parent=first)
    _, stats = copy_snapshot(repository, archive, second)
    assert stats.new_bytes <= 2 * BLOCK + 128 * 1024  # only what changed crosses to the archive
    _, again = copy_snapshot(repository, archive, second)
    assert again.new_bytes == 0  # copying twice is harmless

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f.txt").write_text("hello")
    files = FileTreeWriter(repository, machine="fs").write(tree)
    copy_snapshot(repository, archive, files)
    restore_tree(archive, archive.load_snapshot(files.id), tmp_path / "restored")
    assert (tmp_path / "restored" / "sub" / "f.txt").read_text() == "hello"
    assert verify(archive, full=True).ok
