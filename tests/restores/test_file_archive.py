"""The tar a file restore streams (to the agent's host or as a download): hard links inside the selection
travel as one file and a link to it, and the agent's extraction makes them one file again."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

from catalog.files import tar_stream
from engine.files import FileTreeWriter
from engine.repository import Repository
from engine.storage.local import LocalStorage
from tests.engine.helpers import PASSPHRASE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "agent"))

from bulwark_agent.restore import extract


def test_hard_links_travel_once_and_are_linked_again_on_the_host(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "b").mkdir(parents=True)
    (source / "a.bin").write_bytes(os.urandom(200_000))
    os.link(source / "a.bin", source / "b" / "same.bin")
    repository = Repository.init(LocalStorage(tmp_path / "repo"), PASSPHRASE)
    snapshot = FileTreeWriter(repository, machine="h").write(source)
    archive = b"".join(tar_stream(repository, repository.load_snapshot(snapshot.id), [""]))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = tar.getmembers()
    kinds = {member.name: member.type for member in members}
    assert sorted(kinds.values()).count(tarfile.LNKTYPE) == 1
    assert len(archive) < 2 * 200_000  # the data once
    extract(io.BytesIO(archive), str(tmp_path / "host"))
    restored = tmp_path / "host"
    assert (restored / "a.bin").stat().st_ino == (restored / "b" / "same.bin").stat().st_ino
    assert (restored / "b" / "same.bin").read_bytes() == (source / "a.bin").read_bytes()
