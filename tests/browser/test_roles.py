"""Each role signs in through a real browser, sees its own navigation and a live event stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Estate
from tests.factories import PASSWORD

NAVIGATION = {
    "admin": [
        "Dashboard",
        "Machines",
        "Runs",
        "Alerts",
        "Files",
        "Restores",
        "Sources",
        "Agents",
        "Policies",
        "Storage",
        "Rules",
        "Groups",
        "Users",
        "Audit",
    ],
    "helpdesk": ["Dashboard", "Machines", "Runs", "Alerts", "Files", "Restores"],
    "owner": ["Dashboard", "Machines", "Runs", "Alerts"],
    "auditor": ["Dashboard", "Machines", "Runs", "Alerts", "Restores", "Audit"],
}


def sign_in(page: Any, base: str, username: str) -> None:
    page.goto(base + "/")
    assert "/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


@pytest.mark.parametrize("role", list(NAVIGATION))
def test_each_role_signs_in_and_sees_its_navigation(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path, role: str
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    sign_in(page, live_server_url, estate.user(role).username)
    assert page.locator("nav.nav a").all_inner_texts() == NAVIGATION[role]
    # The live indicator turns green only once the WebSocket is accepted by the server.
    page.wait_for_selector('#live-status[data-state="live"]', timeout=10_000)
    page.screenshot(path=str(artifacts / f"{role}-dashboard.png"), full_page=True)

    page.click("nav.nav >> text=Machines")
    rows = page.locator("#machine-table tbody a[href^='/machines/']").all_inner_texts()
    expected = (
        {"fin-db-01", "fin-file-01", "lab-gpu-07"}
        if role in ("admin", "auditor")
        else {"fin-db-01", "fin-file-01"}
    )
    assert set(rows) == expected
    page.screenshot(path=str(artifacts / f"{role}-machines.png"), full_page=True)

    page.goto(live_server_url + "/users/")
    assert ("Not allowed" in page.content()) == (role != "admin")
    context.close()


def test_signed_out_visitors_only_reach_the_sign_in_page(
    browser: Any, live_server_url: str, artifacts: Path
) -> None:
    page = browser.new_page()
    for path in ("/", "/machines/", "/audit/", "/api/docs/"):
        page.goto(live_server_url + path)
        assert "/login/" in page.url, path
    page.fill("#id_username", "nobody")
    page.fill("#id_password", "wrong-password")
    page.click("button[type=submit]")
    assert "Please enter a correct" in page.inner_text(".error")
    page.screenshot(path=str(artifacts / "login-error.png"))
    page.close()


def test_admin_sees_another_sessions_change_arrive_live(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path
) -> None:
    watcher = browser.new_context().new_page()
    sign_in(watcher, live_server_url, "audrey")  # the auditor watches
    watcher.wait_for_selector('#live-status[data-state="live"]', timeout=10_000)

    actor = browser.new_context().new_page()
    sign_in(actor, live_server_url, "alice")
    actor.goto(live_server_url + "/groups/new/")
    actor.fill("#id_name", "payroll")
    actor.click("form.form-card button[type=submit]")
    actor.wait_for_url(live_server_url + "/groups/")

    watcher.wait_for_selector("#activity li.fresh >> text=machine_group.create", timeout=10_000)
    watcher.screenshot(path=str(artifacts / "auditor-live-activity.png"), full_page=True)
