"""In Chromium, as a help-desk operator: find a file inside a disk-image backup by name, see its versions, open
its folder from the catalog, and download it (only its own blocks are read); screenshots in test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from catalog import indexer
from tests.browser.test_roles import sign_in
from tests.catalog import images
from tests.catalog.points import store  # noqa: F401  (fixture)


def test_a_help_desk_operator_finds_and_downloads_a_file_from_an_image(  # type: ignore[no-untyped-def]
    browser: Any,
    live_server_url: str,
    estate,
    store,  # noqa: F811
    artifacts: Path,
    tmp_path: Path,
) -> None:
    tree = images.sample_tree(tmp_path / "tree")
    report = (tree / "home" / "alice" / "docs" / "report.pdf").read_bytes()
    ext = images.ext4(tmp_path / "ext.img", tree)
    ntfs = images.ntfs(tmp_path / "ntfs.img", {"budget.xlsx": b"x" * 5000})
    disk, _ = images.partitioned(
        tmp_path / "disk.img", "gpt", [(ext, images.GPT_LINUX), (ntfs, images.GPT_BASIC_DATA)]
    )
    first = indexer.catalog_point(store(disk))
    second = indexer.catalog_point(store(disk))
    assert first.catalog_state == second.catalog_state == "complete"

    context = browser.new_context(viewport={"width": 1366, "height": 860}, accept_downloads=True)
    page = context.new_page()
    sign_in(page, live_server_url, estate.helpdesk.username)
    page.click("nav >> text=Files")
    page.fill("input[name=name]", "report")
    page.click("button:has-text('Search')")
    results = page.inner_text("#results")
    assert "/home/alice/docs/report.pdf" in results and "fin-db-01" in results
    page.screenshot(path=str(artifacts / "helpdesk-file-search.png"), full_page=True)
    with page.expect_download() as download:
        page.click("#results a:has-text('Download')")
    assert Path(download.value.path()).read_bytes() == report
    assert download.value.suggested_filename == "report.pdf"
    page.click("#results a:has-text('Open its folder')")
    assert "report.pdf" in page.inner_text("#image-files")
    page.screenshot(path=str(artifacts / "helpdesk-image-folder.png"), full_page=True)
    page.click("a:has-text('volumes')")
    volumes = page.inner_text("#image-files")
    assert "ext" in volumes and "ntfs" in volumes
    page.screenshot(path=str(artifacts / "helpdesk-image-volumes.png"), full_page=True)
    context.close()
