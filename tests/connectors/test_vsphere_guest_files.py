"""Guest file operations against vcsim, whose guest is this machine (tests/peer_tools/vcsim/guestfiles.go)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from connectors.base import ConnectorError
from connectors.vsphere import VSphereConnector
from connectors.vsphere.guest import GuestLogin, GuestLoginRefused
from connectors.vsphere.guestfiles import GuestFileError, guest_files
from tests.connectors.conftest import endpoint_for
from tests.peers import GUEST_PASSWORD, GUEST_USER, Vcsim

LOGIN = GuestLogin(GUEST_USER, GUEST_PASSWORD)


def _vm(vcsim: Vcsim) -> str:
    machine = next(
        m for m in VSphereConnector(endpoint_for(vcsim)).discover().machines if m.name == "DC0_H0_VM0"
    )
    return machine.external_id


def test_a_file_is_written_with_its_mode_and_time_and_a_clash_is_refused_unless_overwrite(
    vcsim: Vcsim, tmp_path: Path
) -> None:
    moref = _vm(vcsim)
    target = tmp_path / "deep" / "er" / "report.txt"
    when = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.UTC)
    with guest_files(endpoint_for(vcsim), moref, LOGIN) as guest:
        assert guest.stat(str(target)) is None
        guest.make_folder(str(target.parent))
        guest.make_folder(str(target.parent))  # already there: fine
        seen: list[int] = []
        guest.upload(
            str(target),
            11,
            [b"hello ", b"world"],
            overwrite=False,
            mode=0o640,
            mtime=when,
            progress=seen.append,
        )
        assert target.read_bytes() == b"hello world" and seen[-1] == 11
        assert target.stat().st_mode & 0o777 == 0o640
        assert int(target.stat().st_mtime) == int(when.timestamp())
        entry = guest.stat(str(target))
        assert entry is not None and entry.kind == "file" and entry.size == 11
        assert guest.stat(str(target.parent)).kind == "directory"  # type: ignore[union-attr]
        with pytest.raises(GuestFileError, match="FileAlreadyExists"):
            guest.upload(str(target), 3, [b"new"], overwrite=False)
        assert target.read_bytes() == b"hello world"
        guest.upload(str(target), 3, [b"new"], overwrite=True)
        assert target.read_bytes() == b"new"
        with pytest.raises(GuestFileError, match="FileNotFound"):
            guest.upload(str(tmp_path / "missing" / "x"), 1, [b"x"], overwrite=False)
        with pytest.raises(GuestFileError, match="not a folder"):
            guest.make_folder(str(target))


def test_a_short_upload_leaves_nothing_behind(vcsim: Vcsim, tmp_path: Path) -> None:
    target = tmp_path / "cut.bin"
    with guest_files(endpoint_for(vcsim), _vm(vcsim), LOGIN) as guest, pytest.raises(ConnectorError):
        guest.upload(str(target), 100, [b"only ten b"], overwrite=False)
    assert not target.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".vcsim-upload")]


def test_a_wrong_guest_login_is_named(vcsim: Vcsim, tmp_path: Path) -> None:
    login = GuestLogin(GUEST_USER, "wrong")
    with (
        guest_files(endpoint_for(vcsim), _vm(vcsim), login) as guest,
        pytest.raises(GuestLoginRefused, match=GUEST_USER),
    ):
        guest.stat(str(tmp_path))
