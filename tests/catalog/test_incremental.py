"""The incremental catalog: a point's catalog reads again only the entries and folders whose bytes changed since
the previous point, and finds exactly what a full walk of the same point finds (real ext4 and XFS images changed
in place with debugfs and xfs_db, no mount)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from catalog import incremental, indexer, repositories
from catalog.choices import CatalogState
from catalog.models import CatalogIndex, RecoveryPoint
from tests.catalog import images
from tests.catalog.test_catalog import versions

pytestmark = pytest.mark.django_db


def full_walk(point: RecoveryPoint) -> dict[str, tuple[Any, ...]]:
    """What a full walk of the point finds (no plan), with hard links worked out as the catalog does."""
    engine, snapshot = repositories.open_point(point)
    walk = indexer.walk_snapshot(engine, snapshot)
    indexer.checked_entries(walk)
    indexer._hard_links(walk.entries)
    fields = ("t", "s", "m", "u", "g", "mt", "ct", "i", "x")
    return {f"{e['v']} {e['p']}": (*(e.get(k) for k in fields), e.get("lt") or "") for e in walk.entries}


def catalogued(point: RecoveryPoint) -> dict[str, tuple[Any, ...]]:
    """What the catalog recorded for the point, in the walker's terms."""
    return {
        key: (r.kind, r.size, r.mode, r.uid, r.gid, r.mtime_ns, r.ctime_ns, r.inode, r.extents, r.link_target)
        for key, r in versions(point).items()
    }


def same(point: RecoveryPoint) -> None:
    """The point's catalog holds exactly what a full walk of it finds."""
    expected, found = full_walk(point), catalogued(point)
    assert found.keys() == expected.keys(), found.keys() ^ expected.keys()
    assert found == expected


def debugfs(image: Path, *commands: str) -> None:
    subprocess.run(
        ["/usr/sbin/debugfs", "-w", "-f", "-", str(image)],
        input="\n".join(commands).encode(),
        check=True,
        capture_output=True,
    )


def volume(point: RecoveryPoint, volume_id: str) -> dict[str, Any]:
    return next(v for v in point.catalog_volumes if v["id"] == volume_id)


def test_the_next_catalog_reads_only_what_changed_and_finds_what_a_full_walk_finds(
    store, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tree = images.sample_tree(tmp_path / "tree")
    for number in range(300):  # enough entries that a change is a small part of them
        folder = tree / "srv" / f"d{number % 12:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{number:04d}.txt").write_text(f"file {number}\n" * (number % 40))
    (tree / "srv" / "a\tname\nwith \\ and 'quotes'.txt").write_text("written as COPY text\n")
    (tree / "srv" / "old").mkdir()
    (tree / "srv" / "old" / "inside.txt").write_text("moved with its folder\n")
    ext = images.ext4(tmp_path / "ext.img", tree)
    ntfs = images.ntfs(tmp_path / "ntfs.img", {"boot.ini": b"[boot loader]\n"})
    disk, _ = images.partitioned(
        tmp_path / "disk.img", "gpt", [(ext, images.GPT_LINUX), (ntfs, images.GPT_BASIC_DATA)]
    )
    first = indexer.catalog_point(store(disk))
    assert first.catalog_state == CatalogState.COMPLETE
    assert not volume(first, "2000:p1")["incremental"] and volume(first, "2000:p1")["geometry"]
    assert CatalogIndex.objects.filter(point=first).exists()

    # A day's changes, in place: a rewritten file (new times), a new file and folder, a removed hard link, a
    # renamed symlink, a folder renamed with what it holds, a new symlink, a file removed.
    (tmp_path / "new.txt").write_text("written on day two\n")
    debugfs(
        ext,
        "sif /home/alice/docs/report.pdf mtime 20260301120000",
        "sif /srv/d03/f0003.txt size 2",
        "write " + str(tmp_path / "new.txt") + " /home/alice/new.txt",
        "mkdir /srv/fresh",
        "write " + str(tmp_path / "new.txt") + " /srv/fresh/a.txt",
        "rm /etc/app-hard.conf",
        "ln /home/config-link /home/link-renamed",
        "unlink /home/config-link",
        "ln /srv/old /srv/renamed",
        "unlink /srv/old",
        "symlink /home/s2 /etc/app.conf",
        "rm /srv/d07/f0007.txt",
    )
    disk, _ = images.partitioned(
        tmp_path / "disk2.img", "gpt", [(ext, images.GPT_LINUX), (ntfs, images.GPT_BASIC_DATA)]
    )
    second = indexer.catalog_point(store(disk))
    assert second.catalog_state == CatalogState.COMPLETE, second.catalog_detail
    ext_volume = volume(second, "2000:p1")
    assert ext_volume["incremental"] and ext_volume["reused"] > 300, ext_volume
    assert not volume(second, "2000:p2")["incremental"]  # NTFS: walked whole
    same(second)
    found = versions(second)
    assert "2000:p1 /srv/renamed/inside.txt" in found and "2000:p1 /srv/old/inside.txt" not in found
    assert "2000:p1 /srv/fresh/a.txt" in found and "2000:p1 /srv/d07/f0007.txt" not in found
    assert found["2000:p1 /home/s2"].link_target == "/etc/app.conf"
    assert found["2000:p1 /srv/d03/f0003.txt"].size == 2
    assert "2000:p1 /srv/a\tname\nwith \\ and 'quotes'.txt" in found
    # Described again: the changed entries and the entries of the folders whose listing changed, no more.
    assert ext_volume["files"] - ext_volume["reused"] <= 30, ext_volume
    # Only the newest point keeps its index.
    assert list(CatalogIndex.objects.values_list("point", flat=True)) == [second.pk]

    # Nothing changed at all: everything reused, still the same as a full walk.
    third = indexer.catalog_point(store(disk))
    assert volume(third, "2000:p1")["incremental"] and volume(third, "2000:p1")["reused"] == len(
        [k for k in versions(third) if k.startswith("2000:p1 ")]
    )
    same(third)


def test_a_changed_layout_or_a_lost_index_means_a_full_walk(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = images.sample_tree(tmp_path / "tree")
    first = indexer.catalog_point(store(images.ext4(tmp_path / "a.img", tree)))
    # The same files on a file system made again with other inode tables: the plan is not trusted.
    (tree / "etc" / "more.conf").write_text("x\n")
    second = indexer.catalog_point(store(images.ext4(tmp_path / "b.img", tree, inodes=4096)))
    record = volume(second, "2000")
    assert not record["incremental"] and record["full_walk_reason"] == "the file system's layout changed"
    same(second)
    assert first.catalog_state == second.catalog_state == CatalogState.COMPLETE
    # An unreadable index: a full walk, the catalog still complete.
    CatalogIndex.objects.filter(point=second).update(data=b"not zstd")
    third = indexer.catalog_point(store(tmp_path / "b.img"))
    assert third.catalog_state == CatalogState.COMPLETE and not volume(third, "2000")["incremental"]
    same(third)


def test_xfs_is_catalogued_incrementally(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = images.sample_tree(tmp_path / "tree")
    for number in range(60):
        (tree / "etc" / f"conf{number:02d}").write_text(f"{number}\n")
    xfs = images.xfs(tmp_path / "xfs.img", tree)
    first = indexer.catalog_point(store(xfs))
    assert first.catalog_state == CatalogState.COMPLETE and volume(first, "2000")["geometry"]
    subprocess.run(
        ["xfs_db", "-x", "-c", "path /etc/conf07", "-c", "write core.mtime.sec 1700000000", str(xfs)],
        check=True,
        capture_output=True,
    )
    second = indexer.catalog_point(store(xfs))
    record = volume(second, "2000")
    assert record["incremental"] and record["reused"] >= 60, record
    same(second)
    assert versions(second)["2000 /etc/conf07"].mtime_ns != versions(first)["2000 /etc/conf07"].mtime_ns


def test_what_a_subverted_walker_says_about_listings_is_checked() -> None:
    good = {"p": "/etc", "i": 12, "c": [["a", 13]], "d": [[4096, 256]], "h": "0" * 32}
    bad = [
        {**good, "p": "etc"},
        {**good, "c": [["../x", 1]]},
        {**good, "c": [["a\x00b", 1]]},
        {**good, "d": [[0, 2**40]]},
        {**good, "h": "short"},
        {**good, "i": "12"},
    ]
    assert incremental.checked_listings([good, *bad]) == [good]
