"""Whole-volume backups on the agent: a short read is never taken for a short block (every later block would
restore shifted)."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))

from bulwark_agent import backup as agent_backup

BLOCK = 65536


class Collected:
    """Stands for the console session: keeps every chunk the volume reader hands over."""

    def __init__(self) -> None:
        self.spec = {"block_size": BLOCK, "table_span": 4096}
        self.figures = agent_backup.Figures()
        self.chunks: dict[str, bytes] = {}
        self.current = self.phase = ""

    def add(self, data: bytes, *, meta: bool = False) -> str:
        chunk_id = os.urandom(32).hex() if meta else data[:32].hex()  # tables by a name, blocks by content
        self.chunks[chunk_id] = data
        return chunk_id

    def report(self, **_: Any) -> None:
        pass

    def enter(self, phase: str) -> None:
        self.phase = phase


def test_short_reads_from_the_device_make_whole_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = tmp_path / "sdb.img"
    content = random.Random(3).randbytes(5 * BLOCK + 1234)
    volume.write_bytes(content)
    real_pread = os.pread
    monkeypatch.setattr(agent_backup.os, "pread", lambda fd, n, at: real_pread(fd, min(n, 10_000), at))
    session = Collected()
    disk = agent_backup.back_up_volume(session, str(volume))  # type: ignore[arg-type]
    blocks = [data for data in session.chunks.values() if len(data) != 32 * 6]
    assert [len(block) for block in blocks] == [BLOCK] * 5 + [1234]
    assert b"".join(blocks) == content and disk["size"] == len(content)
