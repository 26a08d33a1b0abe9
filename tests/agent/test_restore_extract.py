"""The agent's file restore never writes outside its target, whatever the archive holds."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))

from bulwark_agent.restore import UnsafeEntry, extract


def archive(*members: tuple[str, str, bytes | str]) -> io.BytesIO:
    """Members as (kind, name, content or link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, content in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o750
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, str(content)
                tar.addfile(info)
            else:
                data = content if isinstance(content, bytes) else content.encode()
                info.size, info.mode = len(data), 0o640
                tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def test_a_plain_archive_is_restored_with_modes_and_times(tmp_path: Path) -> None:
    figures = extract(
        archive(("dir", "srv", b""), ("file", "srv/a.txt", "alpha"), ("link", "srv/b", "a.txt")),
        str(tmp_path),
    )
    assert (tmp_path / "srv" / "a.txt").read_text() == "alpha"
    assert (tmp_path / "srv" / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "srv").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "srv" / "a.txt").stat().st_mtime == 1_600_000_000
    assert (tmp_path / "srv" / "b").readlink() == Path("a.txt")
    assert figures == {"files": 1, "folders": 1, "symlinks": 1, "bytes": 5, "refused": 0}


@pytest.mark.parametrize(
    "members",
    [
        [("file", "../escape.txt", "x")],
        [("file", "/etc/escape.txt", "x")],
        [("file", "srv/../../escape.txt", "x")],
        [("dir", "srv", b""), ("file", "srv/./x", "x")],
    ],
)
def test_names_that_leave_the_target_are_refused(tmp_path: Path, members: list) -> None:  # type: ignore[type-arg]
    target = tmp_path / "target"
    with pytest.raises(UnsafeEntry):
        extract(archive(*members), str(target))
    assert not (tmp_path / "escape.txt").exists()


def test_a_symlinked_parent_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "srv").symlink_to(outside)  # already on the host
    with pytest.raises(UnsafeEntry):
        extract(archive(("file", "srv/planted.txt", "x")), str(target))
    # A symlink from the archive is created last, so a later entry cannot go through it either.
    with pytest.raises(UnsafeEntry):
        extract(
            archive(("link", "lnk", str(outside)), ("file", "lnk/planted.txt", "x")), str(tmp_path / "t2")
        )
    assert list(outside.iterdir()) == []


def test_a_symlink_standing_where_a_file_goes_is_refused_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "victim.txt"
    outside.write_text("keep me")
    target = tmp_path / "target"
    target.mkdir()
    (target / "a.txt").symlink_to(outside)
    with pytest.raises(UnsafeEntry, match="symlink stands where a file goes"):
        extract(archive(("file", "a.txt", "overwrite")), str(target))
    assert outside.read_text() == "keep me"


def test_hard_links_only_ever_name_a_file_this_restore_wrote(tmp_path: Path) -> None:
    figures = extract(archive(("file", "a", "x"), ("hard", "sub/b", "a")), str(tmp_path / "ok"))
    assert figures["files"] == 2
    assert (tmp_path / "ok" / "a").stat().st_ino == (tmp_path / "ok" / "sub" / "b").stat().st_ino
    for outside in ("/etc/shadow", "../victim", "never-restored"):
        with pytest.raises(UnsafeEntry):
            extract(archive(("file", "a", "x"), ("hard", "b", outside)), str(tmp_path / "bad"))
        assert not (tmp_path / "bad" / "b").exists()


def test_a_broken_stream_leaves_no_partial_file_and_holes_stay_holes(tmp_path: Path) -> None:
    hole = bytes(4 * 1024 * 1024) + b"end"
    figures = extract(archive(("file", "sparse.img", hole)), str(tmp_path / "t"))
    restored = tmp_path / "t" / "sparse.img"
    assert figures["files"] == 1 and restored.read_bytes() == hole
    assert restored.stat().st_blocks * 512 < 1024 * 1024
    whole = archive(("file", "big.bin", b"x" * 300_000))
    with pytest.raises((tarfile.ReadError, EOFError, OSError)):
        extract(io.BytesIO(whole.getvalue()[:150_000]), str(tmp_path / "cut"))
    assert not [path for path in (tmp_path / "cut").iterdir()]
