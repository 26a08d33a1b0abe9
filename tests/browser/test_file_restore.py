"""A help-desk operator finds a file in a server's file backup, downloads it, and restores it to the server's
agent, through the pages in a real browser. Screenshots land in test-artifacts/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from catalog import repositories
from catalog.models import RecoveryPoint
from catalog.services import create_repository
from engine.files import FileTreeWriter
from inventory.models import Agent, Machine
from restores.models import RestoreRequest
from tests.browser.test_roles import sign_in
from tests.conftest import Estate


def test_a_helpdesk_operator_restores_a_file_from_an_agent_backup(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path, tmp_path: Path, settings: Any
) -> None:
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    source = tmp_path / "host"
    (source / "srv" / "reports").mkdir(parents=True)
    (source / "srv" / "reports" / "q3.csv").write_text("region,total\nnorth,12\n")
    (source / "srv" / "reports" / "q4.csv").write_text("region,total\nsouth,7\n")
    (source / "srv" / "notes.txt").write_text("remember the backups\n")
    os.symlink("reports/q4.csv", source / "srv" / "latest.csv")
    machine = Machine.objects.create(
        identity="agent:f11e", name="fin-file-02", kind="physical", platform="agent"
    )
    machine.groups.add(estate.finance)
    Agent.objects.create(machine=machine, key_prefix="f11e", key_digest="-")
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    engine = repositories.open_repository(repository)
    writer = FileTreeWriter(engine, machine=machine.identity)
    snapshot = writer.write(source)
    point = RecoveryPoint.objects.create(
        machine=machine,
        repository=repository,
        snapshot_id=snapshot.id,
        taken_at=snapshot.taken_at,
        kind="files",
        logical_bytes=100,
    )

    context = browser.new_context(viewport={"width": 1366, "height": 860}, accept_downloads=True)
    page = context.new_page()
    sign_in(page, live_server_url, estate.helpdesk.username)
    page.goto(f"{live_server_url}/machines/{machine.pk}/")
    page.click("text=Browse and restore files")
    page.click("text=srv/")
    page.click("text=reports/")
    assert page.locator("td.name").all_inner_texts() == ["q3.csv", "q4.csv"]
    page.screenshot(path=str(artifacts / "helpdesk-file-browser.png"), full_page=True)
    page.check("input[value='srv/reports/q3.csv']")
    with page.expect_download() as download:
        page.click("text=Download chosen (tar)")
    saved = tmp_path / "download.tar"
    download.value.save_as(saved)
    import tarfile

    with tarfile.open(saved) as archive:
        member = archive.extractfile("srv/reports/q3.csv")
        assert member is not None and member.read() == b"region,total\nnorth,12\n"
    page.check("input[value='srv/reports/q3.csv']")
    page.fill("input[name=target]", "/srv/restored")
    page.click("text=Restore on fin-file-02")
    page.wait_for_url("**/restores/*/")
    page.screenshot(path=str(artifacts / "helpdesk-file-restore-queued.png"), full_page=True)
    request = RestoreRequest.objects.get(machine=machine, kind="files_to_agent")
    assert request.paths == ["srv/reports/q3.csv"] and request.target == "/srv/restored"
    assert request.point == point and request.requested_by == estate.helpdesk
    assert "Waiting for the agent on fin-file-02" in page.content()
    context.close()
