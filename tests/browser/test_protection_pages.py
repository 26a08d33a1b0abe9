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
    assert "Unprotected" in page.inner_text("#protection")

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
    # A policy is not protection: gold has no repository yet, so the machine is at risk, in words.
    assert "Policy gold" in protection_text and "cluster C0" in protection_text
    assert "At risk" in protection_text and "has no repository" in protection_text
    page.screenshot(path=str(artifacts / "admin-machine-protection.png"), full_page=True)
    page.goto(live_server_url + "/")
    page.screenshot(path=str(artifacts / "admin-dashboard-protection.png"), full_page=True)
    context.close()


def test_an_admin_watches_a_real_backup_reach_done(
    browser: Any,
    live_server_url: str,
    estate: Estate,
    artifacts: Path,
    vcsim: Vcsim,
    tmp_path: Path,
    settings: Any,
) -> None:
    """A run started from the machine page, executed by an embedded Celery worker thread, its progress streamed
    over the WebSocket to the run page until the bar is full."""
    import random

    from catalog import repositories
    from catalog.services import create_repository
    from core.worker import EmbeddedWorker
    from protection import services
    from tests.connectors.vsphere_helpers import Admin, upload_disk
    from tests.inventory.test_discovery import discover, make_source

    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    rng = random.Random(3)
    image = b"".join(rng.randbytes(64 * 1024) + bytes(64 * 1024) for _ in range(256))  # 32 MiB
    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM0", image)
    admin.close()
    discover(make_source(vcsim))
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    policy = services.create_policy(actor=None, name="gold")
    policy.repository = repository
    policy.save()
    services.create_rule(actor=None, name="vm0", policy=policy, match_name="DC0_H0_VM0")
    machine = Machine.objects.get(name="DC0_H0_VM0")

    worker = EmbeddedWorker(concurrency=2)
    worker.start()
    try:
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        context.add_init_script(
            "window.__progress = 0; document.addEventListener('bulwark:event', (e) => {"
            " if (e.detail.type === 'run.progress') window.__progress += 1; });"
        )
        page = context.new_page()
        sign_in(page, live_server_url, "alice")
        page.goto(f"{live_server_url}/machines/{machine.pk}/")
        page.click("text=Back up now")
        page.wait_for_url(f"{live_server_url}/runs/*/")
        page.wait_for_selector('#run[data-state="committed"]', timeout=60_000)
        assert page.eval_on_selector("#run-progress", "bar => bar.value") == 1000
        assert page.evaluate("window.__progress") >= 1  # figures arrived over the socket, not only by polling
        assert "committed" in page.inner_text("#run")
        page.screenshot(path=str(artifacts / "admin-run.png"), full_page=True)
        context.close()
    finally:
        worker.stop()
