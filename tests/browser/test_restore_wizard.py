"""In Chromium: a help-desk operator restores a file with the wizard (version → target → confirm), asks for an
approval that an admin gives from the restore history while the operator's page changes live, and compares two
versions of a text file side by side; screenshots in test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from catalog import indexer
from restores.models import RestoreRule
from tests.browser.test_roles import sign_in
from tests.catalog import images
from tests.catalog.points import store  # noqa: F401  (fixture)


def test_the_restore_wizard_approval_and_versions(  # type: ignore[no-untyped-def]
    browser: Any,
    live_server_url: str,
    estate,
    store,  # noqa: F811
    artifacts: Path,
    tmp_path: Path,
) -> None:
    tree = images.sample_tree(tmp_path / "tree")
    points = []
    for day, text in enumerate(("listen 8443\nworkers 4\n", "listen 8443\nworkers 8\ntimeout 30\n")):
        (tree / "etc" / "app.conf").write_text(text)
        disk, _ = images.partitioned(
            tmp_path / f"disk{day}.img",
            "gpt",
            [(images.ext4(tmp_path / f"e{day}.img", tree), images.GPT_LINUX)],
        )
        points.append(indexer.catalog_point(store(disk)))
    assert {point.catalog_state for point in points} == {"complete"}

    context = browser.new_context(viewport={"width": 1366, "height": 860}, accept_downloads=True)
    page = context.new_page()
    sign_in(page, live_server_url, estate.helpdesk.username)
    page.goto(f"{live_server_url}/files/?name=app.conf")
    page.click("#results a:has-text('Restore…') >> nth=0")
    assert page.locator("#versions input[name=point]").count() == 2
    page.check("#versions input[name=point] >> nth=1")  # the older version
    assert page.is_disabled("#targets input[value=in_place]")  # no VMware Tools path for this machine
    page.check("#targets input[value=download]")
    page.screenshot(path=str(artifacts / "helpdesk-restore-wizard.png"), full_page=True)
    page.click("button:has-text('Review')")
    assert "a download in this browser" in page.inner_text("#review")
    page.screenshot(path=str(artifacts / "helpdesk-restore-review.png"), full_page=True)
    with page.expect_download() as download:
        page.click("button:has-text('Download')")
    assert Path(download.value.path()).read_bytes() == b"listen 8443\nworkers 4\n"

    # With four-eyes approval: the request waits; an admin approves it from the history; the page changes live.
    RestoreRule.objects.create(group=estate.finance, requires_approval=True, allow_in_place=False)
    page.goto(f"{live_server_url}/files/?name=app.conf")
    page.click("#results a:has-text('Restore…') >> nth=0")
    page.check("#targets input[value=download]")
    page.click("button:has-text('Review')")
    assert "need an admin's approval" in page.inner_text("#needs-approval")
    page.click("button:has-text('Ask for approval')")
    page.wait_for_selector("#awaiting-note")
    page.screenshot(path=str(artifacts / "helpdesk-restore-awaiting.png"), full_page=True)

    admin_context = browser.new_context(viewport={"width": 1366, "height": 860})
    admin = admin_context.new_page()
    sign_in(admin, live_server_url, estate.admin.username)
    admin.click("nav >> text=Restores")
    assert "etc/app.conf" in admin.inner_text("#awaiting")
    admin.screenshot(path=str(artifacts / "admin-restore-history.png"), full_page=True)
    admin.click("#awaiting button:has-text('Approve')")
    admin_context.close()
    page.wait_for_selector("#download", timeout=15000)  # the operator's page heard the decision
    page.screenshot(path=str(artifacts / "helpdesk-restore-approved.png"), full_page=True)

    # The file's versions side by side, and the two texts compared.
    RestoreRule.objects.filter(group=estate.finance).delete()
    page.goto(f"{live_server_url}/files/?name=app.conf")
    page.click("#results a:has-text('Compare versions') >> nth=0")
    assert "changed" in page.inner_text("#history")
    page.screenshot(path=str(artifacts / "helpdesk-file-versions.png"), full_page=True)
    for box in page.locator("#compare input[name=v]").all():
        box.check()
    page.click("button:has-text('Compare the two chosen versions')")
    compared = page.inner_text("#diff")
    assert "workers" in compared and "timeout" in compared
    page.screenshot(path=str(artifacts / "helpdesk-file-compare.png"), full_page=True)
    context.close()
