"""The catalog of image points: real disks (GPT with ext4 + NTFS, MBR with XFS, btrfs, FAT, no table at all) stored
in a real repository, walked by the sandboxed child through the stored chunks, recorded as intervals; crafted
disks leave the worker alive and the catalog partial or failed, with why."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from catalog import indexer, repositories
from catalog.choices import CatalogState
from catalog.models import FileVersion, RecoveryPoint
from catalog.services import create_repository
from tests.catalog import images

pytestmark = pytest.mark.django_db


def versions(point: RecoveryPoint) -> dict[str, FileVersion]:
    """The entries visible in a point: intervals that contain it."""
    rows = FileVersion.objects.filter(
        machine=point.machine, first_at__lte=point.taken_at, last_at__gte=point.taken_at
    ).select_related("path")
    return {f"{row.volume} {row.path.text}": row for row in rows}


def content(disk: Path, version: FileVersion) -> bytes:
    data = bytearray(version.size)
    with open(disk, "rb") as image:
        for at, offset, length in version.extents:
            image.seek(offset)
            data[at : at + length] = image.read(length)
    return bytes(data)


def test_a_gpt_disk_with_ext4_and_ntfs_is_catalogued_file_by_file(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = images.sample_tree(tmp_path / "tree")
    report = (tree / "home" / "alice" / "docs" / "report.pdf").read_bytes()
    ext = images.ext4(tmp_path / "ext.img", tree)
    ntfs = images.ntfs(tmp_path / "ntfs.img", {"boot.ini": b"[boot loader]\n", "data.bin": report})
    disk, offsets = images.partitioned(
        tmp_path / "disk.img", "gpt", [(ext, images.GPT_LINUX), (ntfs, images.GPT_BASIC_DATA)]
    )
    point = indexer.catalog_point(store(disk))
    assert point.catalog_state == CatalogState.COMPLETE, point.catalog_detail
    assert [(v["id"], v["filesystem"], v["state"]) for v in point.catalog_volumes] == [
        ("2000:p1", "ext", "complete"),
        ("2000:p2", "ntfs", "complete"),
    ]
    found = versions(point)
    pdf = found["2000:p1 /home/alice/docs/report.pdf"]
    assert pdf.kind == "file" and pdf.size == 300_000 and pdf.mode == 0o644
    assert content(disk, pdf) == report  # the extents are absolute disk offsets
    assert all(offsets[0] <= offset < offsets[1] for _, offset, _ in pdf.extents)
    assert found["2000:p1 /home/config-link"].link_target == "../etc/app.conf"
    assert found["2000:p1 /home/config-link"].kind == "symlink"
    hard = [found["2000:p1 /etc/app.conf"].kind, found["2000:p1 /etc/app-hard.conf"].kind]
    assert sorted(hard) == ["file", "hardlink"]
    assert "2000:p1 /home/alice/docs/\u00dcbersicht \u2013 2026.txt" in found
    sparse = found["2000:p1 /home/sparse.img"]
    assert sparse.size == 8 * images.MIB and sum(length for _, _, length in sparse.extents) <= 4096
    assert content(disk, sparse)[5 * images.MIB : 5 * images.MIB + 18] == b"data in the middle"
    assert found["2000:p2 /boot.ini"].extents == "resident"  # NTFS keeps small files inside the MFT record
    assert content(disk, found["2000:p2 /data.bin"]) == report
    assert point.catalog_entries == len(found) and point.catalog_read_bytes < disk.stat().st_size


def test_an_mbr_disk_with_xfs_and_a_btrfs_and_a_fat_disk(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = images.sample_tree(tmp_path / "tree")
    xfs = images.xfs(tmp_path / "xfs.img", tree)
    mbr, _ = images.partitioned(tmp_path / "mbr.img", "dos", [(xfs, "83")])
    btrfs = images.btrfs(tmp_path / "btrfs.img", tree)
    fat = images.fat(tmp_path / "fat.img", tree)
    point = indexer.catalog_point(store(mbr, btrfs, fat))
    assert point.catalog_state == CatalogState.COMPLETE, point.catalog_detail
    assert [(v["id"], v["filesystem"]) for v in point.catalog_volumes] == [
        ("2000:p1", "xfs"),
        ("2001", "btrfs"),
        ("2002", "fat"),
    ]
    found = versions(point)
    report = (tree / "home" / "alice" / "docs" / "report.pdf").read_bytes()
    assert content(mbr, found["2000:p1 /home/alice/docs/report.pdf"]) == report
    assert found["2001 /home/alice/docs/report.pdf"].size == 300_000  # btrfs: listed, read through its tree
    assert found["2001 /home/alice/docs/report.pdf"].extents is None
    assert (
        content(fat, found["2002 /HOME/ALICE/DOCS/REPORT.PDF"]) == report
        or content(fat, found["2002 /home/alice/docs/report.pdf"]) == report
    )


def test_an_unchanged_file_is_one_row_across_points_and_retention_narrows_it(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tree = images.sample_tree(tmp_path / "tree")
    first_disk = images.ext4(tmp_path / "day1.img", tree)
    day1 = indexer.catalog_point(store(first_disk))
    (tree / "etc" / "app.conf").write_text("listen 9443\n")  # changes; everything else stays
    second_disk = images.ext4(tmp_path / "day2.img", tree)
    day2 = indexer.catalog_point(store(second_disk))
    day3 = indexer.catalog_point(store(second_disk))
    # A file whose stored blocks did not change is one row over the three points (report.pdf shares a 64 KiB
    # repository block with app.conf here, so it counts as changed on day 2: a row more, never a wrong one).
    report = FileVersion.objects.filter(path__text="/home/sparse.img")
    assert (
        report.count() == 1
        and report.all().get().first_point == day1
        and report.all().get().last_point == day3
    )
    conf = FileVersion.objects.filter(path__text="/etc/app.conf").order_by("first_at")
    # Same size, and mkfs keeps whole-second times: only the content (the stored blocks) tells the two apart.
    assert [(v.first_point, v.last_point) for v in conf.all()] == [(day1, day1), (day2, day3)]
    assert FileVersion.objects.filter(first_point=day3).count() == 0  # day 3 = day 2: nothing new
    assert versions(day3)["2000 /etc/app.conf"].size == len("listen 9443\n")
    assert versions(day1)["2000 /etc/app.conf"].size == len("listen 8443\n")
    # Retention forgets day 2: the intervals that started there now start at day 3; nothing names day 2.
    indexer.forget_points([day2])
    RecoveryPoint.objects.filter(pk=day2.pk).delete()
    assert [(v.first_point, v.last_point) for v in conf.all()] == [(day1, day1), (day3, day3)]
    assert not FileVersion.objects.filter(first_point=day2).exists()
    indexer.forget_points([day1])
    RecoveryPoint.objects.filter(pk=day1.pk).delete()
    assert not FileVersion.objects.filter(last_point=day1).exists()
    assert report.all().get().first_point == day3 and [v.first_point for v in conf.all()] == [day3]


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as image:
        image.seek(offset)
        image.write(data)


def test_crafted_disks_leave_the_worker_alive_and_say_why(store, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    tree = images.sample_tree(tmp_path / "tree")
    # A truncated file system: the image ends half way (the superblock says 32 MiB).
    whole = images.ext4(tmp_path / "whole.img", tree)
    truncated = tmp_path / "truncated.img"
    truncated.write_bytes(whole.read_bytes()[: 3 * images.MIB])
    point = indexer.catalog_point(store(truncated))
    assert point.catalog_state in (CatalogState.PARTIAL, CatalogState.FAILED) and point.catalog_detail

    # An encrypted volume and an unknown one beside a good one: partial, with each reason.
    luks = tmp_path / "luks.img"
    luks.write_bytes(b"LUKS\xba\xbe\x00\x02" + bytes(4 * images.MIB - 8))
    blank = tmp_path / "blank.img"
    blank.write_bytes(os.urandom(2 * images.MIB))
    disk, _ = images.partitioned(
        tmp_path / "mixed.img",
        "gpt",
        [
            (images.ext4(tmp_path / "ok.img", tree), images.GPT_LINUX),
            (luks, images.GPT_LINUX),
            (blank, images.GPT_LINUX),
        ],
    )
    point = indexer.catalog_point(store(disk))
    assert point.catalog_state == CatalogState.PARTIAL
    assert "2000:p2: encrypted with LUKS; no key is held for it" in point.catalog_detail
    assert "2000:p3: no known file system" in point.catalog_detail
    assert "2000:p1 /etc/app.conf" in versions(point)

    # A file whose extents point past the disk: listed, without its data.
    bad = images.ext4(tmp_path / "bad.img", tree)
    _point_extent_past_the_end(bad)
    point = indexer.catalog_point(store(bad))
    assert point.catalog_state == CatalogState.PARTIAL
    assert "outside the volume" in " ".join(v for vol in point.catalog_volumes for v in vol["errors"])

    # A directory that contains itself: walked once, the loop reported.
    loop = images.ext4(tmp_path / "loop.img", tree)
    _make_directory_loop(loop)
    point = indexer.catalog_point(store(loop))
    errors = " ".join(v for vol in point.catalog_volumes for v in vol["errors"])
    assert point.catalog_state == CatalogState.PARTIAL and "directory loop" in errors

    # A huge directory: walked (20,000 entries under the default limits); with too little time or memory the
    # child is stopped and says so, and this process (the worker) carries on.
    big_tree = tmp_path / "big"
    (big_tree / "many").mkdir(parents=True)
    for number in range(20_000):
        (big_tree / "many" / f"f{number:05d}").write_bytes(b"")
    huge = store(images.ext4(tmp_path / "huge.img", big_tree, size_mb=64, inodes=25_000))
    engine, snapshot = repositories.open_point(huge)
    assert "allowed" in indexer.walk_snapshot(engine, snapshot, seconds=0.3).stopped
    starved = indexer.walk_snapshot(engine, snapshot, memory_mb=1)
    assert "memory" in starved.stopped or "walker" in starved.stopped, starved.stopped
    point = indexer.catalog_point(huge)
    assert point.catalog_state == CatalogState.COMPLETE and point.catalog_entries == 20_002


def _inode_offset(image: Path, number: int) -> int:
    """Where inode `number` lives in a small ext4 image (one block group)."""
    with open(image, "rb") as disk:
        disk.seek(1024)
        sb = disk.read(1024)
    block_size = 1024 << struct.unpack_from("<I", sb, 24)[0]
    inode_size = struct.unpack_from("<H", sb, 88)[0]
    descriptors = (1 if block_size > 1024 else 2) * block_size
    with open(image, "rb") as disk:
        disk.seek(descriptors)
        gd = disk.read(64)
    table = struct.unpack_from("<I", gd, 8)[0] | (
        struct.unpack_from("<I", gd, 0x28)[0] << 32 if len(gd) >= 0x2C else 0
    )
    return table * block_size + (number - 1) * inode_size


def _inode_of(image: Path, tree_path: str) -> int:
    from dissect.extfs import ExtFS

    with open(image, "rb") as disk:
        return int(ExtFS(disk).get(tree_path).inum)


def _point_extent_past_the_end(image: Path) -> None:
    """Rewrite the first extent of report.pdf's inode to start far past the end of the disk."""
    offset = _inode_offset(image, _inode_of(image, "/home/alice/docs/report.pdf"))
    with open(image, "r+b") as disk:
        disk.seek(offset + 40)  # i_block: the extent header, then the first extent
        block = bytearray(disk.read(60))
        assert struct.unpack_from("<H", block, 0)[0] == 0xF30A  # an extent tree
        struct.pack_into("<H", block, 12 + 6, 0)  # ee_start_hi
        struct.pack_into("<I", block, 12 + 8, 0x7FFFFFF0)  # ee_start_lo: far beyond 32 MiB
        disk.seek(offset + 40)
        disk.write(block)


def _make_directory_loop(image: Path) -> None:
    """Point a directory entry inside /home/alice at /home's own inode: a cycle, as a crafted image has."""
    from dissect.extfs import ExtFS

    with open(image, "rb") as disk:
        fs = ExtFS(disk)
        home = int(fs.get("/home").inum)
        docs = fs.get("/home/alice/docs")
        block = docs.dataruns()[0][0] * fs.block_size
    with open(image, "r+b") as disk:
        disk.seek(block)
        data = bytearray(disk.read(4096))
        # The first entry of a directory block is ".", the second ".."; the third names a child: make it /home.
        position = 0
        for _ in range(2):
            position += struct.unpack_from("<H", data, position + 4)[0]
        struct.pack_into("<I", data, position, home)
        data[position + 7] = 2  # file type: directory
        disk.seek(block)
        disk.write(data)


def test_the_walker_child_holds_no_secret_and_cannot_write(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The child's environment has no credential key or database address, and once confined it cannot write."""
    import subprocess
    import sys

    monkeypatch.setenv("BULWARK_CREDENTIAL_KEYS", "secret-key")
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/bulwark")
    script = (
        "import os, sys; from catalog.walker import confine; confine(256, 10);"
        "print(sorted(os.environ));"
        "f = open(sys.argv[1], 'w'); f.write('x' * 10); f.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "leak")],
        capture_output=True,
        text=True,
        env=indexer.child_environment(),
        check=False,
    )
    names = set(eval(done.stdout.strip())) - {"LC_CTYPE"}  # noqa: S307  (a list we printed; Python adds LC_CTYPE)
    assert names == {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"}, done.stderr
    assert done.returncode != 0 and "File too large" in done.stderr  # the write was refused


def test_a_vsphere_backup_catalogues_its_disk_in_the_same_task(vcsim, tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    """The real path: a vcsim VM's disk (GPT, ext4 + NTFS) is backed up agentless; the run's task catalogues the
    new point before it ends; day 2 changes one file and the catalog extends every other interval."""
    from catalog.models import RecoveryPoint
    from protection import services
    from protection.backup import run_backup, start_backup
    from protection.choices import RunState
    from tests.connectors.vsphere_helpers import Admin, upload_disk
    from tests.inventory.test_discovery import discover, make_source

    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    tree = images.sample_tree(tmp_path / "tree")

    def disk_of(tree: Path, name: str) -> bytes:
        return images.gpt_ext4_ntfs(tmp_path, name, tree, {"notes.txt": b"ntfs notes\n" * 100})

    admin = Admin(vcsim)
    day1_disk = disk_of(tree, "day1")
    upload_disk(admin, "DC0_H0_VM0", day1_disk)
    source = make_source(vcsim)
    discover(source)
    repository = create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))
    policy = services.create_policy(actor=None, name="gold")
    services.update_policy(actor=None, policy=policy, repository=repository)
    services.create_rule(actor=None, name="vm0", policy=policy, match_name="DC0_H0_VM0")
    from inventory.models import Machine

    machine = Machine.objects.get(name="DC0_H0_VM0")
    first = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert first.state == RunState.COMMITTED, first.error
    day1 = RecoveryPoint.objects.get(run=first)
    assert day1.catalog_state == CatalogState.COMPLETE, day1.catalog_detail
    key = day1.disks[0]["key"]  # the disk's device key on the VM
    found = versions(day1)
    assert found[f"{key}:p1 /home/alice/docs/report.pdf"].size == 300_000
    assert found[f"{key}:p2 /notes.txt"].size == 1100

    # Day 2: the guest rewrites report.pdf in place (its blocks, nothing else); everything else stays as it was.
    report = found[f"{key}:p1 /home/alice/docs/report.pdf"]
    day2_disk = bytearray(day1_disk)
    _, offset, _ = report.extents[0]
    day2_disk[offset : offset + 4096] = os.urandom(4096)
    upload_disk(admin, "DC0_H0_VM0", bytes(day2_disk))
    admin.close()
    second = run_backup(start_backup(machine=machine, requested_by=None).pk)
    day2 = RecoveryPoint.objects.get(run=second)
    assert day2.catalog_state == CatalogState.COMPLETE, day2.catalog_detail
    assert not second.full_read  # changed-block tracking: only the rewritten area was read
    spans = {
        row.path.text: (row.first_point_id, row.last_point_id)
        for row in FileVersion.objects.filter(machine=machine, volume=f"{key}:p1").select_related("path")
    }
    assert spans.pop("/home/alice/docs/report.pdf") == (day2.pk, day2.pk)  # the rewritten file: a new version
    assert FileVersion.objects.filter(path__text="/home/alice/docs/report.pdf").count() == 2
    assert set(spans.values()) == {(day1.pk, day2.pk)}  # every other entry: one row for both points
    assert FileVersion.objects.get(machine=machine, path__text="/notes.txt").last_point == day2


def test_a_help_desk_operator_downloads_one_file_reading_only_its_blocks(  # type: ignore[no-untyped-def]
    store, tmp_path: Path, estate, client_for, monkeypatch
) -> None:
    from engine.image import ImageReader

    tree = images.sample_tree(tmp_path / "tree")
    report = (tree / "home" / "alice" / "docs" / "report.pdf").read_bytes()
    disk, _ = images.partitioned(
        tmp_path / "disk.img", "gpt", [(images.ext4(tmp_path / "e.img", tree), images.GPT_LINUX)]
    )
    point = indexer.catalog_point(store(disk))
    found = versions(point)
    blocks: set[int] = set()
    real_block = ImageReader.block

    def counted(self, number):  # type: ignore[no-untyped-def]
        blocks.add(number)
        return real_block(self, number)

    monkeypatch.setattr(ImageReader, "block", counted)
    helpdesk = client_for("helpdesk")
    answer = helpdesk.get(f"/restores/files/{found['2000:p1 /home/alice/docs/report.pdf'].pk}/download/")
    assert answer.status_code == 200 and b"".join(answer.streaming_content) == report
    assert answer["Content-Disposition"] == "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    block_size = 64 * 1024
    assert len(blocks) <= -(-len(report) // block_size) + 1  # the file's blocks, not the disk's
    unicode_name = found["2000:p1 /home/alice/docs/\u00dcbersicht \u2013 2026.txt"]
    answer = helpdesk.get(f"/restores/files/{unicode_name.pk}/download/")
    assert b"".join(answer.streaming_content) == b"unicode name\n"
    assert "filename*=UTF-8''%C3%9Cbersicht%20%E2%80%93%202026.txt" in answer["Content-Disposition"]
    sparse = helpdesk.get(f"/restores/files/{found['2000:p1 /home/sparse.img'].pk}/download/")
    assert b"".join(sparse.streaming_content) == (tree / "home" / "sparse.img").read_bytes()
    assert helpdesk.get(f"/restores/files/{found['2000:p1 /home/alice'].pk}/download/").status_code == 404
    assert (
        client_for("owner").get(f"/restores/files/{found['2000:p1 /etc/app.conf'].pk}/download/").status_code
        == 403
    )
    from restores.models import RestoreRequest

    assert (
        RestoreRequest.objects.filter(kind="download", requested_by=estate.helpdesk).count() == 3
    )  # audited


def test_impossible_values_from_the_walker_are_dropped_not_stored() -> None:
    """The parent trusts nothing the child says: a size past 2^63, a path with a NUL or without its leading
    slash, a broken extent list; times out of range become unknown instead of failing the whole catalog."""
    walk = indexer.Walk(
        entries=[
            {"v": "d", "p": "/ok", "t": "file", "s": 1, "mt": 2**70, "x": [[0, 0, 1]]},
            {"v": "d", "p": "/huge", "t": "file", "s": 2**64},
            {"v": "d", "p": "/nul\x00name", "t": "file", "s": 1},
            {"v": "d", "p": "relative", "t": "file", "s": 1},
            {"v": "d", "p": "/bad-extents", "t": "file", "s": 1, "x": [[0, -5]]},
            {"v": "d", "p": "/flag", "t": "file", "s": True},
        ]
    )
    assert indexer.checked_entries(walk) == 4
    assert [(e["p"], e.get("mt"), e.get("x")) for e in walk.entries] == [
        ("/ok", None, [[0, 0, 1]]),
        ("/bad-extents", None, None),
    ]


def test_files_without_plain_extents_download_through_the_sandboxed_walker(  # type: ignore[no-untyped-def]
    store, tmp_path: Path, client_for
) -> None:
    """Data inside an NTFS record and files on btrfs have no plain extents: the walker child reads them through
    their file system (same confinement), the worker only serves stored blocks."""
    tree = images.sample_tree(tmp_path / "tree")
    report = (tree / "home" / "alice" / "docs" / "report.pdf").read_bytes()
    ntfs = images.ntfs(tmp_path / "ntfs.img", {"boot.ini": b"[boot loader]\n", "data.bin": report})
    btrfs = images.btrfs(tmp_path / "btrfs.img", tree)
    point = indexer.catalog_point(store(ntfs, btrfs))
    found = versions(point)
    helpdesk = client_for("helpdesk")
    resident = helpdesk.get(f"/restores/files/{found['2000 /boot.ini'].pk}/download/")
    assert resident.status_code == 200 and b"".join(resident.streaming_content) == b"[boot loader]\n"
    on_btrfs = helpdesk.get(f"/restores/files/{found['2001 /home/alice/docs/report.pdf'].pk}/download/")
    assert on_btrfs.status_code == 200 and b"".join(on_btrfs.streaming_content) == report
    link = helpdesk.get(f"/restores/files/{found['2001 /home/config-link'].pk}/download/")
    assert link.status_code == 404  # a link is not a file to download
