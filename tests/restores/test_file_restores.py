"""Files out of an image backup, end to end on vcsim: a help-desk operator finds a file across two versions,
restores the older one into the VM through VMware Tools guest operations and downloads the newer one; restore
rules (targets, extensions, size cap) and four-eyes approval hold what they must.

vcsim's guest is this machine (tests/peer_tools/vcsim/guestfiles.go), so "the original location" of a file is
a real path here: the disk's tree mirrors this test's own temporary folder."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from catalog import repositories
from catalog.choices import CatalogState
from catalog.models import FileVersion, RecoveryPoint
from catalog.services import create_repository
from restores.file_restores import FileRestoreRefused, decide, request_file_restore
from restores.models import Conflict, RestoreRequest, RestoreRule, RestoreState
from restores.services import run_restore
from tests.catalog import images

pytestmark = pytest.mark.django_db


@pytest.fixture
def backed_up(vcsim, tmp_path: Path, settings, estate):  # type: ignore[no-untyped-def]
    """DC0_H0_VM0 with a GPT disk (ext4 system volume + NTFS), in the finance group, backed up twice: notes.txt
    changes between the two points. Yields (machine, day1, day2, folder of the file's original location)."""
    from inventory.models import Machine
    from protection import services
    from protection.backup import run_backup, start_backup
    from protection.choices import RunState
    from tests.connectors.vsphere_helpers import Admin, upload_disk
    from tests.inventory.test_discovery import discover, make_source
    from tests.peers import GUEST_PASSWORD, GUEST_USER

    settings.DATA_DIR = tmp_path / "data"
    repositories.forget_open_repositories()
    home = tmp_path / "guest-home"  # the file's original location, on this machine (vcsim's guest)
    tree = images.sample_tree(tmp_path / "tree")
    inside = tree / str(home).lstrip("/")
    inside.mkdir(parents=True)

    def disk(notes: bytes, name: str) -> bytes:
        (inside / "notes.txt").write_bytes(notes)
        return images.gpt_ext4_ntfs(tmp_path, name, tree, {"data.bin": b"x" * 5000})

    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM0", disk(b"monday's notes\n" * 100, "day1"))
    source = make_source(vcsim)
    discover(source)
    repository = create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))
    policy = services.create_policy(actor=None, name="gold")
    services.update_policy(actor=None, policy=policy, repository=repository)
    services.create_rule(actor=None, name="vm0", policy=policy, match_name="DC0_H0_VM0")
    services.set_guest_login(actor=None, policy=policy, username=GUEST_USER, password=GUEST_PASSWORD)
    machine = Machine.objects.get(name="DC0_H0_VM0")
    machine.groups.add(estate.finance)  # the help-desk operator's scope
    first = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert first.state == RunState.COMMITTED, first.error
    upload_disk(admin, "DC0_H0_VM0", disk(b"tuesday's notes, longer\n" * 100, "day2"))
    admin.close()
    second = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert second.state == RunState.COMMITTED, second.error
    day1, day2 = RecoveryPoint.objects.get(run=first), RecoveryPoint.objects.get(run=second)
    assert day1.catalog_state == day2.catalog_state == CatalogState.COMPLETE, day2.catalog_detail
    return machine, day1, day2, home


def _volume(point: RecoveryPoint) -> str:
    return f"{point.disks[0]['key']}:p1"


def test_help_desk_finds_two_versions_restores_the_older_into_the_vm_and_downloads_the_newer(  # type: ignore[no-untyped-def]
    backed_up, estate, client_for
) -> None:
    machine, day1, _, home = backed_up
    helpdesk = client_for("helpdesk")
    found = helpdesk.get("/api/catalog/search/", {"name": "notes.txt", "machine": machine.pk}).json()
    ours = [hit for hit in found["results"] if hit["path"] == f"{home}/notes.txt"]
    assert len(ours) == 1 and len(ours[0]["versions"]) == 2
    older, newer = sorted(ours[0]["versions"], key=lambda version: version["first_seen"])
    assert older["size"] == 1500 and newer["size"] == 2400

    def restore_notes(conflict: str = Conflict.KEEP_BOTH) -> RestoreRequest:
        request = request_file_restore(
            actor=estate.helpdesk,
            point=day1,
            volume=_volume(day1),
            paths=[f"{home}/notes.txt"],
            target="in_place",
            conflict=conflict,
        )
        assert request.state == RestoreState.QUEUED
        done = run_restore(request.pk)
        assert done.state == RestoreState.DONE, done.error
        return done

    # The older version back where it was, through VMware Tools (the file is not there now).
    done = restore_notes()
    assert (home / "notes.txt").read_bytes() == b"monday's notes\n" * 100
    assert done.result["restored"] == [{"path": f"{home}/notes.txt", "bytes": 1500, "as": ""}]
    assert done.bytes_done == 1500

    # Again, "keep both": the restored copy lands beside the file; "skip" leaves it; "overwrite" replaces it.
    (home / "notes.txt").write_bytes(b"edited since\n")
    restore_notes()
    assert (home / "notes.txt").read_bytes() == b"edited since\n"
    assert (home / "RESTORED-notes.txt").read_bytes() == b"monday's notes\n" * 100
    restore_notes(Conflict.SKIP)
    assert (home / "notes.txt").read_bytes() == b"edited since\n"
    restore_notes(Conflict.OVERWRITE)
    assert (home / "notes.txt").read_bytes() == b"monday's notes\n" * 100

    # A whole folder into another folder of the VM: names, modes, a hard link (as a copy), a link never followed.
    other = home.parent / "restored-here"
    folder = run_restore(
        request_file_restore(
            actor=estate.helpdesk,
            point=day1,
            volume=_volume(day1),
            paths=["/etc", "/home"],
            target="other_folder",
            folder=str(other),
        ).pk
    )
    assert folder.state == RestoreState.DONE, folder.error
    assert (other / "etc" / "app.conf").read_text() == "listen 8443\n"
    assert (other / "etc" / "app-hard.conf").read_text() == "listen 8443\n"
    assert (
        other / "home" / "alice" / "docs" / "\u00dcbersicht \u2013 2026.txt"
    ).read_text() == "unicode name\n"
    sparse = (other / "home" / "sparse.img").read_bytes()
    assert len(sparse) == 8 * 1024 * 1024 and sparse[5 * 1024 * 1024 :].startswith(b"data in the middle")
    assert not (other / "home" / "config-link").exists()
    assert any("symbolic link" in item["why"] for item in folder.result["skipped"])

    # The newer version as a download, by its catalog id; the older point can be asked for explicitly.
    answer = helpdesk.get(f"/restores/files/{newer['id']}/download/")
    assert b"".join(answer.streaming_content) == b"tuesday's notes, longer\n" * 100
    assert RestoreRequest.objects.filter(requested_by=estate.helpdesk).count() == 6


def test_restore_rules_and_four_eyes_approval_hold_a_help_desk_restore(backed_up, estate, client_for) -> None:  # type: ignore[no-untyped-def]
    machine, day1, _, home = backed_up
    volume, notes = _volume(day1), f"{home}/notes.txt"
    rule = RestoreRule.objects.create(group=estate.finance, allow_in_place=False, extensions="pdf, conf")

    def ask(**options: Any) -> RestoreRequest:
        values: dict[str, Any] = {"actor": estate.helpdesk, "point": day1, "volume": volume, "paths": [notes]}
        values.update(options)
        return request_file_restore(**values)

    with pytest.raises(FileRestoreRefused, match="do not allow restores to the original location"):
        ask(target="in_place")
    with pytest.raises(FileRestoreRefused, match=r"allow only conf, pdf files; not .*notes\.txt"):
        ask(target="other_folder", folder=str(home / "x"))
    rule.extensions, rule.max_bytes = "", 1000
    rule.save()
    with pytest.raises(FileRestoreRefused, match="holds 1,500 bytes; the restore rules allow at most 1,000"):
        ask(target="download")
    assert ask(target="download", actor=estate.admin).state == RestoreState.QUEUED  # admins are not bound

    rule.max_bytes, rule.requires_approval = None, True
    rule.save()
    held = ask(target="other_folder", folder=str(home / "approved"))
    assert held.state == RestoreState.AWAITING_APPROVAL
    assert run_restore(held.pk).state == RestoreState.AWAITING_APPROVAL  # a worker never runs a held restore
    assert not (home / "approved").exists()
    with pytest.raises(FileRestoreRefused, match="only an admin"):
        decide(actor=estate.helpdesk, request_id=held.pk, approve=True)
    with pytest.raises(FileRestoreRefused, match="say why"):
        decide(actor=estate.admin, request_id=held.pk, approve=False)
    decide(actor=estate.admin, request_id=held.pk, approve=True)
    assert run_restore(held.pk).state == RestoreState.DONE
    assert (home / "approved" / "notes.txt").read_bytes() == b"monday's notes\n" * 100

    refused = ask(target="download")
    decide(actor=estate.admin, request_id=refused.pk, approve=False, reason="ask your manager first")
    refused.refresh_from_db()
    assert refused.state == RestoreState.REFUSED and refused.decision_reason == "ask your manager first"
    with pytest.raises(FileRestoreRefused, match="refused, not awaiting"):
        decide(actor=estate.admin, request_id=refused.pk, approve=True)
    # The direct download of a held machine's file is refused too: it would go round the approval.
    version = FileVersion.objects.get(machine=machine, path__text=notes, first_point=day1)
    answer = client_for("helpdesk").get(f"/restores/files/{version.pk}/download/")
    assert answer.status_code == 403
    from core.models import AuditEvent

    assert set(AuditEvent.objects.filter(action__startswith="restore.").values_list("action", flat=True)) >= {
        "restore.request",
        "restore.approve",
        "restore.refuse",
    }


def test_another_scope_is_never_selected_and_a_folder_escape_is_refused(backed_up, estate) -> None:  # type: ignore[no-untyped-def]
    _, day1, _, _ = backed_up
    with pytest.raises(FileRestoreRefused, match="not in this recovery point's catalog"):
        request_file_restore(
            actor=estate.outsider,
            point=day1,
            volume=_volume(day1),
            paths=["/etc/app.conf"],
            target="download",
        )
    for folder in ("relative/x", "/srv/../etc", "C:\\a\\..\\b"):
        with pytest.raises(FileRestoreRefused, match=r"absolute|\.\."):
            request_file_restore(
                actor=estate.helpdesk,
                point=day1,
                volume=_volume(day1),
                paths=["/etc/app.conf"],
                target="other_folder",
                folder=folder,
            )
    with pytest.raises(FileRestoreRefused, match=r"'\.\.'"):
        request_file_restore(
            actor=estate.helpdesk, point=day1, volume=_volume(day1), paths=["/etc/../root"], target="download"
        )
    ntfs = f"{day1.disks[0]['key']}:p2"
    with pytest.raises(FileRestoreRefused, match="original location is known only for the system volume"):
        request_file_restore(
            actor=estate.helpdesk, point=day1, volume=ntfs, paths=["/data.bin"], target="in_place"
        )


def test_a_download_restore_of_several_files_is_a_tar_with_links_kept(backed_up, estate) -> None:  # type: ignore[no-untyped-def]
    from restores.file_restores import download_rows

    _, day1, _, _ = backed_up
    request = request_file_restore(
        actor=estate.helpdesk, point=day1, volume=_volume(day1), paths=["/etc", "/home"], target="download"
    )
    name, pieces, length = download_rows(request)
    assert name.endswith(".tar") and length is None
    archive = tarfile.open(fileobj=io.BytesIO(b"".join(pieces)))  # noqa: SIM115 (in memory)
    members = {member.name: member for member in archive.getmembers()}
    links = [members[name] for name in ("etc/app.conf", "etc/app-hard.conf") if members[name].islnk()]
    assert len(links) == 1 and links[0].linkname in (
        "etc/app.conf",
        "etc/app-hard.conf",
    )  # one file, two names
    assert members["home/config-link"].issym() and members["home/config-link"].linkname == "../etc/app.conf"
    assert len(archive.extractfile(members["home/sparse.img"]).read()) == 8 * 1024 * 1024  # type: ignore[union-attr]
    linked = links[0].name
    other = "etc/app.conf" if linked == "etc/app-hard.conf" else "etc/app-hard.conf"
    assert archive.extractfile(members[other]).read() == b"listen 8443\n"  # type: ignore[union-attr]
    assert os.path.basename(name).startswith("DC0_H0_VM0-")


def test_the_wizard_history_approval_and_comparison_pages(backed_up, estate, client_for) -> None:  # type: ignore[no-untyped-def]
    machine, day1, day2, home = backed_up
    notes = f"{home}/notes.txt"
    older = FileVersion.objects.get(machine=machine, path__text=notes, first_point=day1)
    newer = FileVersion.objects.get(machine=machine, path__text=notes, first_point=day2)
    helpdesk, admin = client_for("helpdesk"), client_for("admin")

    page = helpdesk.get("/restores/new/", {"version": older.pk})
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count('name="point"') == 2 and f'value="{day1.pk}" id="version-{older.pk}"' in text
    fields = {"point": day1.pk, "volume": _volume(day1), "path": notes, "target": "other_folder"}
    fields["folder"] = str(home / "wizard")
    review = helpdesk.post("/restores/new/", fields)
    assert review.status_code == 200 and 'id="review"' in review.content.decode()
    assert "1.5\xa0KB" in review.content.decode()
    done = helpdesk.post("/restores/new/", {**fields, "confirm": "1"})
    restore = RestoreRequest.objects.latest("pk")
    assert done.status_code == 302 and done["Location"] == f"/restores/{restore.pk}/"
    run_restore(restore.pk)
    detail = helpdesk.get(done["Location"]).content.decode()
    assert f"{home}/wizard/notes.txt" in detail and 'id="restored"' in detail
    assert (home / "wizard" / "notes.txt").read_bytes() == b"monday's notes\n" * 100
    bad = helpdesk.post("/restores/new/", {**fields, "folder": "relative", "confirm": "1"})
    assert bad.status_code == 200 and "must be absolute" in bad.content.decode()

    # Held for approval: the requester's page says so; an admin approves it from the history; then it downloads.
    RestoreRule.objects.create(group=estate.finance, requires_approval=True)
    held = helpdesk.post("/restores/new/", {**fields, "target": "download", "confirm": "1"})
    restore = RestoreRequest.objects.latest("pk")
    assert restore.state == RestoreState.AWAITING_APPROVAL
    assert 'id="awaiting-note"' in helpdesk.get(held["Location"]).content.decode()
    assert helpdesk.get(f"/restores/{restore.pk}/download/").status_code == 403
    history = admin.get("/restores/").content.decode()
    assert 'id="awaiting"' in history and "notes.txt" in history
    assert helpdesk.post(f"/restores/{restore.pk}/decide/", {"decision": "approve"}).status_code == 403
    decided = admin.post(
        f"/restores/{restore.pk}/decide/", {"decision": "approve", "next": "https://evil.example/phish"}
    )
    assert decided["Location"] == f"/restores/{restore.pk}/"  # never sent off the console
    restore.refresh_from_db()
    assert restore.state == RestoreState.QUEUED and restore.decided_by == estate.admin
    answer = helpdesk.get(f"/restores/{restore.pk}/download/")
    assert b"".join(answer.streaming_content) == b"monday's notes\n" * 100
    assert client_for("admin").get("/restores/", {"state": "done"}).status_code == 200
    own = helpdesk.get("/restores/").content.decode()
    assert own.count("<tr>") >= 2 and "awaiting" not in own.split('id="history"')[0]

    # Two versions side by side (the rules hold for reading them too: approval needed, so refused first).
    assert helpdesk.get("/restores/files/compare/", {"v": [older.pk, newer.pk]}).status_code == 403
    RestoreRule.objects.filter(group=estate.finance).delete()
    compared = helpdesk.get("/restores/files/compare/", {"v": [newer.pk, older.pk]}).content.decode()
    assert "monday" in compared and "tuesday" in compared  # difflib writes spaces as &nbsp;
    assert "diff_chg" in compared or "diff_add" in compared
    versions = helpdesk.get(f"/files/{newer.pk}/history/").content.decode()
    assert versions.count('name="v"') == 2 and "changed" in versions
    assert client_for("owner").get(f"/files/{newer.pk}/history/").status_code == 403
    assert admin.get(f"/groups/{estate.finance.pk}/restore-rule/").status_code == 200
    saved = admin.post(
        f"/groups/{estate.finance.pk}/restore-rule/",
        {"allow_download": "on", "extensions": "txt", "max_bytes": "5000", "requires_approval": "on"},
    )
    assert saved.status_code == 302
    rule = RestoreRule.objects.get(group=estate.finance)
    assert not rule.allow_in_place and rule.extension_list == ["txt"] and rule.requires_approval


def test_the_file_restore_api_checks_its_payload_and_holds_for_approval(
    backed_up, estate, client_for
) -> None:  # type: ignore[no-untyped-def]
    _, day1, _, home = backed_up
    helpdesk, admin = client_for("helpdesk"), client_for("admin")
    bad = helpdesk.post(
        "/api/file-restores/", {"point": "x", "target": "moon"}, content_type="application/json"
    )
    assert bad.status_code == 400 and {"point", "volume", "paths", "target"} <= set(bad.json())
    body = {"point": day1.pk, "volume": _volume(day1), "paths": [f"{home}/notes.txt"], "target": "download"}
    outsider = client_for(None)
    outsider.force_login(estate.outsider)
    assert outsider.post("/api/file-restores/", body, content_type="application/json").json() == {
        "point": ["No such recovery point."]
    }
    RestoreRule.objects.create(group=estate.finance, requires_approval=True)
    made = helpdesk.post("/api/file-restores/", body, content_type="application/json")
    assert made.status_code == 201 and made.json()["state"] == "awaiting"
    pk = made.json()["id"]
    assert helpdesk.post(f"/api/restores/{pk}/approve/").status_code == 403
    refused = admin.post(f"/api/restores/{pk}/refuse/", {}, content_type="application/json")
    assert refused.status_code == 400 and "say why" in refused.json()["detail"][0]
    approved = admin.post(f"/api/restores/{pk}/approve/", {}, content_type="application/json")
    assert approved.status_code == 200 and approved.json()["state"] == "queued"
    assert approved.json()["decided_by"] == estate.admin.pk
