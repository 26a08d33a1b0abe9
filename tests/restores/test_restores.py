"""Whole-machine restores: disk images to the restore area (never outside it), and as a new VM on vcsim."""

from __future__ import annotations

import os
import ssl
import urllib.request
from pathlib import Path

import pytest

from catalog.models import RecoveryPoint
from protection.backup import run_backup, start_backup
from restores.models import RestoreKind, RestoreState
from restores.services import RestoreRefused, request_restore, run_restore
from tests.conftest import Estate
from tests.protection.test_backup_runs import protected_vm  # noqa: F401  (fixture)


@pytest.fixture
def point(protected_vm, settings, tmp_path: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    settings.BULWARK_RESTORE_ROOT = str(tmp_path / "restores")
    machine, image, vcsim = protected_vm
    run = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert run.state == "committed", run.error
    return RecoveryPoint.objects.get(run=run), image, vcsim


@pytest.mark.django_db
def test_a_machine_restores_to_image_files(point, estate: Estate, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recovery_point, image, _ = point
    request = request_restore(
        actor=estate.admin, point=recovery_point, kind=RestoreKind.IMAGE_FILES, target="ticket-4711"
    )
    done = run_restore(request.pk)
    assert done.state == RestoreState.DONE, done.error
    files = done.result["files"]
    assert len(files) == 1 and Path(files[0]["path"]).read_bytes() == image
    assert Path(files[0]["path"]).parent == tmp_path / "restores" / "ticket-4711"
    assert done.bytes_done == done.bytes_total == len(image)
    with pytest.raises(RestoreRefused, match="not empty"):
        request_restore(
            actor=estate.admin, point=recovery_point, kind=RestoreKind.IMAGE_FILES, target="ticket-4711"
        )


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["../outside", "/etc", "a/b", "..", "", "x" * 200])
def test_a_restore_can_never_leave_the_restore_area(point, estate: Estate, target: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RestoreRefused):
        request_restore(actor=estate.admin, point=point[0], kind=RestoreKind.IMAGE_FILES, target=target)


@pytest.mark.django_db
def test_a_symlinked_target_is_refused(point, estate: Estate, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "restores").mkdir(exist_ok=True)
    os.symlink("/tmp", tmp_path / "restores" / "sneaky")
    with pytest.raises(RestoreRefused, match="symbolic link"):
        request_restore(actor=estate.admin, point=point[0], kind=RestoreKind.IMAGE_FILES, target="sneaky")


@pytest.mark.django_db
def test_a_machine_restores_as_a_new_vm_on_vcsim(point, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    from tests.connectors.vsphere_helpers import Admin

    recovery_point, image, vcsim = point
    request = request_restore(
        actor=estate.admin, point=recovery_point, kind=RestoreKind.NEW_VM, target="restored-vm0"
    )
    done = run_restore(request.pk)
    assert done.state == RestoreState.DONE, done.error
    admin = Admin(vcsim)
    vm = admin.vm("restored-vm0")
    assert vm._moId == done.result["vm"]
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{vcsim.port}/folder/restored-vm0/restored-vm0-flat.vmdk?dcPath=DC0&dsName=LocalDS_0"
    with urllib.request.urlopen(
        urllib.request.Request(url, headers={"Cookie": admin.instance._stub.cookie}), context=context
    ) as answer:
        assert answer.read() == image
    admin.close()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["DC0_C0_RP0_VM1", "dc0_c0_rp0_vm1"])
def test_a_new_vm_never_takes_the_name_of_an_existing_one(point, estate: Estate, name: str) -> None:  # type: ignore[no-untyped-def]
    from tests.connectors.vsphere_helpers import Admin

    recovery_point, _, vcsim = point
    request = request_restore(actor=estate.admin, point=recovery_point, kind=RestoreKind.NEW_VM, target=name)
    done = run_restore(request.pk)
    assert done.state == RestoreState.FAILED
    assert "already exists" in done.error and "choose another name" in done.error
    admin = Admin(vcsim)
    try:
        assert admin.vm("DC0_C0_RP0_VM1")  # the original is untouched
    finally:
        admin.close()


@pytest.mark.django_db
def test_the_restore_api_refuses_a_target_outside_and_scopes_reads(point, estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    import json

    recovery_point, _, _ = point
    admin = client_for("admin")
    response = admin.post(
        "/api/restores/",
        data=json.dumps({"point": recovery_point.pk, "kind": "image_files", "target": "../../etc"}),
        content_type="application/json",
    )
    assert response.status_code == 400 and "target" in response.json()
    response = admin.post(
        "/api/restores/",
        data=json.dumps({"point": recovery_point.pk, "kind": "image_files", "target": "case-12"}),
        content_type="application/json",
    )
    assert response.status_code == 201 and response.json()["state"] == "queued"
    # The restored machine is not in the help-desk operator's groups: its restores are invisible to them.
    assert client_for("helpdesk").get(f"/api/restores/{response.json()['id']}/").status_code == 404
