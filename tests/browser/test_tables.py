"""In Chromium: the machine table sorts by its headers and applies bulk actions; an admin acknowledges an alert;
each role's machine list and alerts page are kept as screenshots in test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from protection import services
from protection.models import Alert, Assignment
from tests.browser.test_roles import sign_in
from tests.conftest import Estate
from tests.factories import MachineFactory


@pytest.fixture
def many(estate: Estate, settings) -> Estate:  # type: ignore[no-untyped-def]
    for name in ("app-10", "app-2", "app-1"):
        MachineFactory(name=name, groups=[estate.finance])
    settings.BULWARK_UNPROTECTED_GRACE_MINUTES = 0
    services.check_unprotected()
    return estate


def test_an_admin_sorts_ticks_and_assigns_in_bulk(
    browser: Any, live_server_url: str, many: Estate, artifacts: Path
) -> None:
    gold = services.create_policy(actor=None, name="gold")
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    sign_in(page, live_server_url, many.admin.username)
    page.goto(live_server_url + "/machines/?q=app-")
    rows = page.locator("#machine-table tbody a[href^='/machines/']")
    assert rows.all_inner_texts() == ["app-1", "app-2", "app-10"]  # by name, as people read names
    page.click("#machine-table thead >> text=Name")  # the header turns the order round ...
    page.wait_for_url("**sort=-name")
    assert rows.all_inner_texts() == ["app-10", "app-2", "app-1"]
    page.click("#machine-table thead >> text=Name")  # ... and back
    page.wait_for_url("**sort=name")
    assert rows.all_inner_texts() == ["app-1", "app-2", "app-10"]
    page.check("#tick-all")
    assert page.inner_text("#bulk-count") == "3 ticked:"
    page.select_option("select[name=action]", "assign")
    page.select_option("select[name=policy]", label="gold")
    page.click("text=Apply to ticked")
    page.wait_for_selector(".flash")
    assert "3 machine(s) now under gold" in page.inner_text(".flash")
    assert Assignment.objects.filter(policy=gold, machine__name__startswith="app-").count() == 3
    page.screenshot(path=str(artifacts / "admin-machines-bulk.png"), full_page=True)
    context.close()


def test_an_admin_acknowledges_an_alert(
    browser: Any, live_server_url: str, many: Estate, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    sign_in(page, live_server_url, many.admin.username)
    page.goto(live_server_url + "/alerts/")
    page.click("text=6 machines")  # the grouped alert opens its list
    assert page.is_visible("text=app-10")
    page.click("#alerts button:has-text('Acknowledge')")
    page.wait_for_selector("text=acknowledged by alice")
    alert = Alert.objects.open().get(kind="unprotected")
    assert alert.acknowledged_by == many.admin
    page.screenshot(path=str(artifacts / "admin-alerts.png"), full_page=True)
    context.close()


@pytest.mark.parametrize("role", ["helpdesk", "owner", "auditor"])
def test_each_role_sees_its_machines_and_alerts(
    browser: Any, live_server_url: str, many: Estate, artifacts: Path, role: str
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    sign_in(page, live_server_url, many.user(role).username)
    page.goto(live_server_url + "/machines/")
    assert page.locator("#tick-all").count() == 0  # bulk actions are the admin's
    page.screenshot(path=str(artifacts / f"{role}-machines-table.png"), full_page=True)
    page.goto(live_server_url + "/alerts/")
    text = page.inner_text("main")
    assert ("lab-gpu-07" in text) == (role == "auditor") or "machines" in text
    assert page.locator("button:has-text('Acknowledge')").count() == 0
    page.screenshot(path=str(artifacts / f"{role}-alerts.png"), full_page=True)
    context.close()


def test_a_narrow_window_folds_the_navigation_behind_a_menu_button(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 420, "height": 800})
    page = context.new_page()
    sign_in(page, live_server_url, estate.admin.username)
    assert page.is_hidden("#main-nav") and page.is_visible("[data-menu]")
    page.click("[data-menu]")
    assert page.is_visible("#main-nav >> text=Machines")
    page.screenshot(path=str(artifacts / "admin-narrow-menu.png"), full_page=True)
    page.click("#main-nav >> text=Machines")
    page.wait_for_url("**/machines/")
    context.close()


@pytest.mark.parametrize("role", ["admin", "helpdesk"])
def test_the_run_list_and_policies_show_what_runs_next(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path, role: str, tmp_path: Path, settings
) -> None:  # type: ignore[no-untyped-def]
    from catalog import repositories
    from catalog.services import create_repository

    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    policy = services.create_policy(actor=None, name="nightly")
    services.update_policy(actor=None, policy=policy, repository=repository, schedule_cron="30 22 * * *")
    for machine in (estate.finance_vm, estate.research_vm):  # rows, not the service: no events in this thread
        Assignment.objects.create(machine=machine, policy=policy, assigned_by=estate.admin, reason="by hand")
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    sign_in(page, live_server_url, estate.user(role).username)
    page.goto(live_server_url + "/runs/")
    upcoming = page.inner_text("#upcoming")
    assert "nightly" in upcoming and ("2 machines" if role == "admin" else "1 machine") in upcoming
    page.screenshot(path=str(artifacts / f"{role}-runs-next.png"), full_page=True)
    if role == "admin":
        page.goto(live_server_url + "/policies/")
        assert page.locator("th:has-text('Next run')").count() == 1
        page.screenshot(path=str(artifacts / "admin-policies-next.png"), full_page=True)
    context.close()
