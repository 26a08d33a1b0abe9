"""An admin sets up an agent policy on a cron schedule with a copy to a second tier, through the pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from catalog import repositories
from catalog.services import create_repository
from protection.models import Policy
from tests.browser.test_roles import sign_in
from tests.conftest import Estate


def test_an_admin_configures_an_agent_policy_with_a_copy(
    browser: Any, live_server_url: str, estate: Estate, artifacts: Path, tmp_path: Path, settings: Any
) -> None:
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    create_repository(actor=None, name="primary", kind="local", path="primary", site="dc1")
    create_repository(actor=None, name="offsite", kind="local", path="offsite", tier="copy", site="dc2")
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    sign_in(page, live_server_url, estate.admin.username)
    page.goto(f"{live_server_url}/policies/new/")
    page.fill("#id_name", "linux servers")
    page.select_option("#id_repository", label="primary")
    page.select_option("#id_mode", "agent")
    page.fill("#id_schedule_cron", "every night")
    page.click("button.primary")
    assert "five fields" in page.content() and "needs paths or volumes" in page.content()
    page.fill("#id_schedule_cron", "30 22 * * 1-5")
    page.fill("#id_include_paths", "/etc\n/srv/data")
    page.fill("#id_exclude_patterns", "*.tmp")
    page.select_option("#id_dedup_location", "agent")
    page.fill("#id_pre_script", "fsfreeze -f /srv/data")
    page.fill("#id_post_script", "fsfreeze -u /srv/data")
    page.click("button.primary")
    page.wait_for_url(f"{live_server_url}/policies/")
    policy = Policy.objects.get(name="linux servers")
    assert policy.mode == "agent" and policy.schedule_cron == "30 22 * * 1-5"
    page.goto(f"{live_server_url}/policies/{policy.pk}/")
    page.select_option("#copies select[name=repository]", label="offsite")
    page.fill("#copies input[name=keep_yearly]", "7")
    page.click("text=Add copy")
    page.wait_for_selector("text=now copies every recovery point to offsite")
    page.screenshot(path=str(artifacts / "admin-policy-agent-copy.png"), full_page=True)
    target = policy.copy_targets.get()
    assert target.repository.name == "offsite" and target.keep_yearly == 7
    context.close()
