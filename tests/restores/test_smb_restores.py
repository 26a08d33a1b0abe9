"""Files out of an image point into a folder of an SMB share (Samba, written as its user through smbprotocol)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog import indexer
from core.services import create_credential
from restores.file_restores import FileRestoreRefused, request_file_restore
from restores.models import RestoreRule, RestoreState
from restores.services import run_restore
from tests.catalog import images
from tests.catalog.points import store  # noqa: F401  (fixture)
from tests.peers import Samba, require_peer, samba_available

pytestmark = pytest.mark.django_db


@pytest.fixture
def share(tmp_path: Path) -> Iterator[tuple[Samba, Path]]:
    require_peer(samba_available(), "smbd is missing or this is not root (make peer-deps installs Samba)")
    folder = Path(tempfile.mkdtemp(prefix="bulwark-smb-"))
    folder.chmod(0o755)
    server = Samba(str(folder), str(tmp_path / "samba"), writable=True)
    yield server, folder
    import smbclient

    smbclient.reset_connection_cache()
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def test_files_of_an_image_point_are_written_to_an_smb_share(
    share,
    store,  # noqa: F811
    estate,
    client_for,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    server, folder = share
    tree = images.sample_tree(tmp_path / "tree")
    disk, _ = images.partitioned(
        tmp_path / "d.img", "gpt", [(images.ext4(tmp_path / "e.img", tree), images.GPT_LINUX)]
    )
    point = indexer.catalog_point(store(disk))
    login = create_credential(
        actor=None, name="fileserver", kind="smb", username=server.user, secret=server.password
    )
    unc = f"\\\\127.0.0.1:{server.port}\\vms\\restored"

    def restore(**options: object) -> RestoreState:
        values: dict[str, object] = {
            "actor": estate.helpdesk,
            "point": point,
            "volume": "2000:p1",
            "paths": ["/etc", "/home/alice"],
            "target": "smb",
            "folder": unc,
            "smb_credential": login.pk,
        }
        values.update(options)
        done = run_restore(request_file_restore(**values).pk)  # type: ignore[arg-type]
        return done

    done = restore()
    assert done.state == RestoreState.DONE, done.error
    assert (folder / "restored" / "etc" / "app.conf").read_text() == "listen 8443\n"
    report = tree / "home" / "alice" / "docs" / "report.pdf"
    assert (folder / "restored" / "alice" / "docs" / "report.pdf").read_bytes() == report.read_bytes()
    assert int((folder / "restored" / "etc" / "app.conf").stat().st_mtime) == int(
        (tree / "etc" / "app.conf").stat().st_mtime
    )
    assert not [p for p in (folder / "restored" / "etc").iterdir() if p.name.startswith(".bulwark-")]
    again = restore(paths=["/etc"])  # keep both: copies beside the files already there
    assert again.state == RestoreState.DONE
    assert (folder / "restored" / "etc" / "RESTORED-app.conf").read_text() == "listen 8443\n"
    assert any(
        item["path"].endswith("\\restored\\etc\\RESTORED-app.conf") for item in again.result["restored"]
    )
    assert all(item["path"].startswith("\\\\127.0.0.1\\vms\\") for item in again.result["restored"])

    # The same through the wizard: the SMB login is chosen by name, the folder typed.
    wizard = client_for("helpdesk")
    page = wizard.get("/restores/new/", {"point": point.pk, "volume": "2000:p1", "path": "/home/sparse.img"})
    assert "fileserver (bulwarksmb)" in page.content.decode()
    fields = {"point": point.pk, "volume": "2000:p1", "path": "/home/sparse.img", "target": "smb"}
    fields |= {"smb_folder": unc, "smb_credential": login.pk, "confirm": "1"}
    answer = wizard.post("/restores/new/", fields)
    assert answer.status_code == 302, answer.content.decode()[-2000:]
    from restores.models import RestoreRequest

    assert run_restore(RestoreRequest.objects.latest("pk").pk).state == RestoreState.DONE
    assert (folder / "restored" / "sparse.img").read_bytes() == (tree / "home" / "sparse.img").read_bytes()

    wrong = create_credential(actor=None, name="wrong", kind="smb", username=server.user, secret="nope")
    refused = restore(smb_credential=wrong.pk)
    assert refused.state == RestoreState.FAILED and "refused the user name or password" in refused.error
    assert "nope" not in refused.error
    for bad in ("//server/share", "\\\\srv\\share\\..\\x", "C:\\x"):
        with pytest.raises(FileRestoreRefused, match="SMB folder"):
            request_file_restore(
                actor=estate.helpdesk,
                point=point,
                volume="2000:p1",
                paths=["/etc"],
                target="smb",
                folder=bad,
                smb_credential=login.pk,
            )
    vsphere = create_credential(actor=None, name="vc", kind="vsphere", username="u", secret="s")
    with pytest.raises(FileRestoreRefused, match="choose the SMB login"):
        restore(smb_credential=vsphere.pk)
    RestoreRule.objects.create(group=estate.finance, allow_smb=False)
    with pytest.raises(FileRestoreRefused, match="do not allow restores to a folder on an smb share"):
        restore()
