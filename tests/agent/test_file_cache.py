"""The agent's cache of unchanged files: a file is taken as unchanged only when size, mtime, inode and ctime
all match the last committed backup."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))

from bulwark_agent.backup import FileCache


def test_an_edit_that_puts_size_and_mtime_back_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"A" * 5000)
    first = FileCache(tmp_path / "state", None)
    first.record(str(path), path.stat(), ["aa" * 32])
    first.commit("snapshot-1")
    same = FileCache(tmp_path / "state", "snapshot-1")
    assert same.unchanged(str(path), path.stat()) == ["aa" * 32]
    same.close()
    before = path.stat()
    path.write_bytes(b"B" * 5000)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    edited = FileCache(tmp_path / "state", "snapshot-1")
    assert edited.unchanged(str(path), path.stat()) is None
    edited.close()


def test_a_cache_from_before_ctime_was_kept_reads_everything_once(tmp_path: Path) -> None:
    import sqlite3

    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(str(state / "files.sqlite"))
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    old.execute(
        "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, chunks TEXT)"
    )
    old.execute("INSERT INTO meta VALUES ('snapshot', 'snapshot-0')")
    old.commit()
    old.close()
    path = tmp_path / "f"
    path.write_bytes(b"x")
    cache = FileCache(state, "snapshot-0")
    assert cache.unchanged(str(path), path.stat()) is None
    cache.close()
