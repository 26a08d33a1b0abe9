"""An admin adds a vCenter, sees it discovered, finds a machine unprotected, writes a rule with a preview, and
sees the machine protected with the reason. Screenshots of each page land in test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inventory.models import Machine
from tests.browser.test_roles import sign_in
from tests.conftest import Estate
from tests.peers import Vcsim


@pytest.fixture
def eager_tasks(settings):  # type: ignore[no-untyped-def]
    # Discovery runs inside the request once it commits (no worker process in this test).
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_from_a_new_source_to_a_protected_machine(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path, vcsim: Vcsim, eager_tasks: None
) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    sign_in(page, live_server_url, "alice")
    page.click("nav.nav >> text=Sources")
    assert "No sources yet" in page.content()
    page.click("text=Add source")
    page.fill("#id_name", "vcenter-lab")
    page.select_option("#id_kind", "vcenter")
    page.fill("#id_address", "127.0.0.1")
    page.fill("#id_port", str(vcsim.port))
    page.fill("#id_username", vcsim.username)
    page.fill("#id_password", vcsim.password)
    page.fill("#id_thumbprint", vcsim.thumbprint())
    page.fill("#id_jurisdiction", "EU")
    page.click("form.form-card button[type=submit]")
    page.wait_for_selector("#discovery-runs")
    assert "succeeded" in page.inner_text("#discovery-runs")
    page.click("text=Test connection")
    page.wait_for_selector("#test-result .notice.ok")
    page.screenshot(path=str(artifacts / "admin-source.png"), full_page=True)

    machine = Machine.objects.get(name="DC0_C0_RP0_VM0")
    page.goto(f"{live_server_url}/machines/{machine.pk}/")
    assert "Not protected" in page.inner_text("#protection")

    page.goto(live_server_url + "/policies/new/")
    page.fill("#id_name", "gold")
    page.click("form.form-card button[type=submit]")
    page.wait_for_url(live_server_url + "/policies/")
    page.goto(live_server_url + "/rules/new/")
    page.fill("#id_name", "cluster C0")
    page.select_option("#id_policy", label="gold")
    page.fill("#id_match_host", "DC0_C0")
    page.click("text=Preview matches")
    page.wait_for_selector("#preview table")
    assert "would match" in page.inner_text("#preview")
    page.screenshot(path=str(artifacts / "admin-rule-preview.png"), full_page=True)
    page.click("text=Save and apply")
    page.wait_for_url(live_server_url + "/rules/")
    page.screenshot(path=str(artifacts / "admin-rules.png"), full_page=True)

    page.goto(f"{live_server_url}/machines/{machine.pk}/")
    protection_text = page.inner_text("#protection")
    assert "Protected by gold" in protection_text and "cluster C0" in protection_text
    page.screenshot(path=str(artifacts / "admin-machine-protection.png"), full_page=True)
    page.goto(live_server_url + "/")
    page.screenshot(path=str(artifacts / "admin-dashboard-protection.png"), full_page=True)
    context.close()
