"""File backups: content, metadata and unchanged-file reuse; restores that never leave their target."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest

from engine.errors import UnsafePath
from engine.files import FileTreeWriter, read_file, restore_tree, walk
from engine.repository import Repository, Snapshot, new_snapshot_id, now_utc
from engine.storage.local import LocalStorage
from tests.engine.helpers import PASSPHRASE


def make_tree(root: Path) -> None:
    rng = random.Random(5)
    (root / "etc" / "app").mkdir(parents=True)
    (root / "etc" / "app" / "app.conf").write_text("listen = 8080\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(rng.randbytes(6 * 1024 * 1024 + 17))  # several FastCDC chunks
    (root / "data" / "empty").write_bytes(b"")
    (root / "data" / "secret.key").write_bytes(b"k" * 100)
    os.chmod(root / "data" / "secret.key", 0o600)
    os.symlink("../etc/app/app.conf", root / "data" / "conf-link")
    os.symlink("/nonexistent/outside", root / "data" / "dangling")
    os.utime(root / "etc" / "app" / "app.conf", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))


def test_a_tree_round_trips_with_content_and_metadata(repository: Repository, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    snapshot = FileTreeWriter(repository, machine="fs-1").write(source)
    assert snapshot.kind == "files" and snapshot.stats["files"] == 4
    paths = dict(walk(repository, snapshot))
    assert set(paths) == {
        "etc",
        "etc/app",
        "etc/app/app.conf",
        "data",
        "data/big.bin",
        "data/empty",
        "data/secret.key",
        "data/conf-link",
        "data/dangling",
    }
    assert b"".join(read_file(repository, paths["etc/app/app.conf"])) == b"listen = 8080\n"

    target = tmp_path / "restored"
    restore_tree(repository, snapshot, target)
    for relative in ("data/big.bin", "data/empty", "data/secret.key", "etc/app/app.conf"):
        assert (target / relative).read_bytes() == (source / relative).read_bytes()
    assert stat.S_IMODE((target / "data" / "secret.key").stat().st_mode) == 0o600
    assert (target / "etc" / "app" / "app.conf").stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert os.readlink(target / "data" / "conf-link") == "../etc/app/app.conf"
    assert os.readlink(target / "data" / "dangling") == "/nonexistent/outside"


def test_unchanged_files_are_not_read_again(repository: Repository, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    first = FileTreeWriter(repository, machine="fs-1").write(source)
    (source / "etc" / "app" / "app.conf").write_text("listen = 9090\n")
    second = FileTreeWriter(repository, machine="fs-1", parent=first).write(source)
    assert second.stats["unchanged_files"] == 3
    assert second.stats["read_bytes"] == len("listen = 9090\n")
    assert second.stats["new_bytes"] < 64 * 1024  # one small file and the trees on its path
    target = tmp_path / "restored"
    restore_tree(repository, second, target)
    assert (target / "etc" / "app" / "app.conf").read_text() == "listen = 9090\n"


def test_an_edit_inside_a_large_file_stores_only_nearby_chunks(
    repository: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    data = bytearray(random.Random(9).randbytes(12 * 1024 * 1024))
    (source / "disk.vmdk").write_bytes(bytes(data))
    first = FileTreeWriter(repository, machine="fs-1").write(source)
    data[6_000_000:6_000_010] = b"0123456789"
    (source / "disk.vmdk").write_bytes(bytes(data))
    second = FileTreeWriter(repository, machine="fs-1", parent=first).write(source)
    assert second.stats["new_bytes"] < 5 * 1024 * 1024  # content-defined: only the chunk(s) around the edit


def forge(repository: Repository, trees: dict[str, list[dict]]) -> Snapshot:  # type: ignore[type-arg]
    """A snapshot from hand-written trees (what a tampered or buggy writer could produce)."""
    writer = repository.writer()
    ids: dict[str, str] = {}
    for name in [*(n for n in trees if n != "root"), "root"]:  # children first (one level deep here)
        entries = [
            dict(entry, tree=ids[entry["tree"]]) if entry["type"] == "dir" else entry for entry in trees[name]
        ]
        ids[name] = writer.add(json.dumps({"version": 1, "entries": entries}).encode(), meta=True).hex()
    writer.flush()
    writer.close()
    when = now_utc()
    snapshot = Snapshot(
        id=new_snapshot_id(when),
        kind="files",
        time=when.isoformat(),
        hostname="h",
        machine="m",
        tags=[],
        parent=None,
        tree=ids["root"],
    )
    repository.commit_snapshot(snapshot)
    return snapshot


def meta(name: str, kind: str, **extra: object) -> dict:  # type: ignore[type-arg]
    return {
        "name": name,
        "type": kind,
        "mode": 0o644,
        "uid": 0,
        "gid": 0,
        "mtime_ns": 0,
        "atime_ns": 0,
        **extra,
    }


@pytest.mark.parametrize("name", ["..", ".", "", "../../etc/passwd", "/etc/passwd", "a/b", "nul\0byte"])
def test_crafted_names_never_leave_the_target(repository: Repository, tmp_path: Path, name: str) -> None:
    snapshot = forge(repository, {"root": [meta(name, "file", size=0, chunks=[])]})
    with pytest.raises(UnsafePath):
        restore_tree(repository, snapshot, tmp_path / "target")
    assert not (tmp_path / "etc").exists() and not Path("/etc/passwd-bulwark-test").exists()


def test_a_symlink_and_a_directory_of_the_same_name_are_refused(
    repository: Repository, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    snapshot = forge(
        repository,
        {
            "root": [meta("a", "symlink", target=str(outside)), meta("a", "dir", tree="sub")],
            "sub": [meta("planted", "file", size=0, chunks=[])],
        },
    )
    with pytest.raises(UnsafePath, match="twice"):
        restore_tree(repository, snapshot, tmp_path / "target")
    assert list(outside.iterdir()) == []


def test_a_symlink_already_in_the_target_is_never_written_through(
    repository: Repository, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "data")  # planted before the restore
    os.symlink(outside / "victim", target / "file")
    snapshot = forge(
        repository,
        {
            "root": [meta("data", "dir", tree="sub"), meta("file", "file", size=0, chunks=[])],
            "sub": [meta("planted", "file", size=0, chunks=[])],
        },
    )
    with pytest.raises((UnsafePath, OSError)):
        restore_tree(repository, snapshot, target)
    assert list(outside.iterdir()) == []


def test_sparse_files_restore_sparse_and_hard_links_stay_links(tmp_path: Path) -> None:
    repository = Repository.init(LocalStorage(tmp_path / "repo"), PASSPHRASE)
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    sparse = source / "disk.img"
    with open(sparse, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
        handle.seek(5 * 1024 * 1024)
        handle.write(os.urandom(4096))
    (source / "original").write_bytes(os.urandom(300_000))
    os.link(source / "original", source / "sub" / "second-name")
    (source / "unrelated").write_bytes(os.urandom(1000))
    snapshot = FileTreeWriter(repository, machine="h").write(source)
    target = tmp_path / "out"
    restore_tree(repository, repository.load_snapshot(snapshot.id), target)
    assert (target / "disk.img").read_bytes() == sparse.read_bytes()
    assert (target / "disk.img").stat().st_blocks * 512 < 1024 * 1024  # holes, not 16 MiB of zeros
    assert (target / "original").stat().st_ino == (target / "sub" / "second-name").stat().st_ino
    assert (target / "sub" / "second-name").read_bytes() == (source / "original").read_bytes()
    assert (target / "unrelated").stat().st_nlink == 1
