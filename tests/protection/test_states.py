"""Protected means recoverable: one definition of the five states, used by dashboard, lists, page and API."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from catalog import repositories
from catalog.models import RecoveryPoint
from catalog.services import create_repository
from inventory.models import Machine
from protection import services
from protection.choices import RuleAction, RuleMode, RunState
from protection.models import Assignment, BackupRun
from protection.states import ProtectionState, state_of
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


@pytest.fixture
def gold(estate: Estate, tmp_path: Path, settings):  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    policy = services.create_policy(actor=None, name="gold", rpo_minutes=24 * 60)
    services.update_policy(actor=None, policy=policy, repository=repository)
    return policy


def point(machine, hours_ago: float):  # type: ignore[no-untyped-def]
    return RecoveryPoint.objects.create(
        machine=machine,
        repository=machine.assignment.policy.repository,
        snapshot_id=f"s-{machine.pk}-{hours_ago}",
        taken_at=timezone.now() - datetime.timedelta(hours=hours_ago),
    )


def test_a_policy_alone_is_not_protection(estate: Estate, gold) -> None:  # type: ignore[no-untyped-def]
    vm = estate.finance_vm
    assert state_of(vm).state == ProtectionState.UNPROTECTED
    services.assign_policy(actor=estate.admin, machine=vm, policy=gold)
    waiting = state_of(vm)
    assert waiting.state == ProtectionState.WAITING and waiting.next_run_at is not None
    vm.refresh_from_db()
    point(vm, hours_ago=2)
    protected = state_of(vm)
    assert protected.state == ProtectionState.PROTECTED and "within the RPO of 24 h" in protected.reason


def test_a_missed_rpo_a_failed_run_or_a_policy_that_cannot_run_is_at_risk(estate: Estate, gold) -> None:  # type: ignore[no-untyped-def]
    vm = estate.finance_vm
    services.assign_policy(actor=estate.admin, machine=vm, policy=gold)
    vm.refresh_from_db()
    old = point(vm, hours_ago=30)
    assert state_of(vm).state == ProtectionState.AT_RISK and "misses the RPO" in state_of(vm).reason
    old.delete()
    point(vm, hours_ago=1)
    BackupRun.objects.create(machine=vm, policy=gold, repository=gold.repository, state=RunState.FAILED)
    assert state_of(vm).reason == "the last run failed"
    BackupRun.objects.all().delete()
    services.update_policy(actor=None, policy=gold, repository=None)
    assert "has no repository" in state_of(vm).reason
    services.update_policy(actor=None, policy=gold, enabled=False, repository=old.repository)
    assert state_of(vm).state == ProtectionState.AT_RISK and "disabled" in state_of(vm).reason


def test_an_exclusion_takes_effect_even_over_an_assign_only_rule(estate: Estate, gold) -> None:  # type: ignore[no-untyped-def]
    vm = estate.finance_vm
    services.create_rule(
        actor=None, name="finance", policy=gold, match_name="fin-*", mode=RuleMode.ASSIGN_ONLY
    )
    assert Assignment.objects.filter(machine=vm).exists()
    services.create_rule(actor=None, name="no db", action=RuleAction.EXCLUDE, match_name="fin-db-*")
    assert not Assignment.objects.filter(machine=vm).exists()  # the assignment agrees with the trace
    assert state_of(vm).state == ProtectionState.EXCLUDED and "no db" in state_of(vm).reason


def test_a_person_keeps_a_machine_under_a_policy_and_the_page_says_so(
    estate: Estate, gold, client_for
) -> None:  # type: ignore[no-untyped-def]
    vm = estate.finance_vm
    services.create_rule(actor=None, name="no db", action=RuleAction.EXCLUDE, match_name="fin-db-*")
    services.assign_policy(actor=estate.admin, machine=vm, policy=gold, reason="CHG-9")
    page = client_for("admin").get(f"/machines/{vm.pk}/").content.decode()
    assert "Assigned by hand, so it stays under gold although rule <strong>no db</strong> excludes it" in page


def test_the_dashboard_list_and_api_use_the_same_states(estate: Estate, gold, client_for) -> None:  # type: ignore[no-untyped-def]
    services.assign_policy(actor=estate.admin, machine=estate.finance_vm, policy=gold)
    estate.finance_vm.refresh_from_db()
    point(estate.finance_vm, hours_ago=1)
    services.assign_policy(actor=estate.admin, machine=estate.research_vm, policy=gold)
    dashboard = client_for("admin").get("/").content.decode()
    assert 'data-count="protected">1<' in dashboard and 'data-count="waiting">1<' in dashboard
    assert 'data-count="unprotected">1<' in dashboard  # fin-file-01
    listed = client_for("admin").get("/machines/?state=waiting").content.decode()
    assert "lab-gpu-07" in listed and "fin-db-01" not in listed
    client = APIClient()
    client.force_authenticate(estate.admin)
    answer = client.get("/api/machines/", {"state": "protected"}).json()
    assert [m["name"] for m in answer["results"]] == ["fin-db-01"]
    assert answer["results"][0]["protection"]["state"] == "protected"
    helpdesk = client_for("helpdesk").get("/").content.decode()
    assert 'data-count="waiting">0<' in helpdesk  # lab-gpu-07 is not in hank's scope


def test_a_first_backup_waits_for_the_policys_window(estate: Estate, gold) -> None:  # type: ignore[no-untyped-def]
    from protection.schedule import schedule_due

    services.update_policy(actor=None, policy=gold, schedule_cron="30 22 * * 1-5")
    services.assign_policy(actor=estate.admin, machine=estate.finance_vm, policy=gold)
    noon = timezone.now().replace(hour=12, minute=0)
    Assignment.objects.update(assigned_at=noon - datetime.timedelta(minutes=5))
    assert schedule_due(now=noon) == []  # the 222 runs in business hours, no more
    estate.finance_vm.refresh_from_db()
    next_run = state_of(estate.finance_vm, now=noon).next_run_at
    assert next_run is not None and timezone.localtime(next_run).strftime("%H:%M") == "22:30"


def test_a_policy_without_a_repository_is_a_draft_said_in_words(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    client = client_for("admin")
    answer = client.post(
        "/policies/new/",
        {
            "name": "bronze",
            "rpo_minutes": 1440,
            "interval_minutes": 1440,
            "priority": 5,
            "keep_last": 7,
            "keep_daily": 7,
            "keep_weekly": 4,
            "keep_monthly": 12,
            "keep_yearly": 0,
            "full_every_days": 0,
            "mode": "agentless",
            "dedup_location": "proxy",
            "enabled": "on",
        },
        follow=True,
    )
    page = answer.content.decode()
    assert "saved as a draft" in page and "cannot run" in page
    listing = client.get("/policies/").content.decode()
    assert "draft" in listing and "Create a repository" in listing


def test_back_up_now_for_a_whole_policy(estate: Estate, gold, client_for) -> None:  # type: ignore[no-untyped-def]
    for machine in (estate.finance_vm, estate.research_vm):
        services.assign_policy(actor=estate.admin, machine=machine, policy=gold)
    page = client_for("admin").get("/policies/").content.decode()
    assert "Back up now" in page
    answer = client_for("admin").post(f"/policies/{gold.pk}/backup/", follow=True)
    assert "2 backup(s) of gold queued" in answer.content.decode()
    assert BackupRun.objects.filter(policy=gold).count() == 2


def test_a_repository_that_does_not_answer_puts_its_machines_at_risk(
    estate: Estate, gold, client_for, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from protection.schedule import check_repositories

    vm = estate.finance_vm
    services.assign_policy(actor=estate.admin, machine=vm, policy=gold)
    vm.refresh_from_db()
    point(vm, hours_ago=1)
    assert check_repositories() == {"unreachable": 0}
    assert state_of(vm).state == ProtectionState.PROTECTED
    folder = tmp_path / "repo"
    folder.rename(tmp_path / "repo-unmounted")  # the NFS mount went away
    assert check_repositories() == {"unreachable": 1}
    at_risk = state_of(vm)
    assert (
        at_risk.state == ProtectionState.AT_RISK and "repository primary cannot be reached" in at_risk.reason
    )
    assert "unreachable" in client_for("admin").get("/repositories/").content.decode()
    (tmp_path / "repo-unmounted").rename(folder)
    check_repositories()
    assert state_of(vm).state == ProtectionState.PROTECTED


def test_the_policy_list_and_the_run_list_show_the_next_run(estate: Estate, gold, client_for) -> None:  # type: ignore[no-untyped-def]
    """The next run is the schedule's next fire time inside the window, for the machine waiting longest; the run
    list counts only the machines its reader may see."""
    from protection.states import upcoming_runs

    services.update_policy(actor=None, policy=gold, schedule_cron="30 22 * * *")
    for machine in (estate.finance_vm, estate.research_vm):
        services.assign_policy(actor=estate.admin, machine=machine, policy=gold)
    noon = timezone.localtime().replace(hour=12, minute=0, second=0, microsecond=0)
    Assignment.objects.update(assigned_at=noon - datetime.timedelta(minutes=5))
    upcoming = upcoming_runs([gold], Machine.objects.all(), now=noon)[gold.pk]
    assert upcoming.machines == 2 and timezone.localtime(upcoming.at).strftime("%H:%M") == "22:30"
    # A machine never queued since a day ago is due now: it goes first.
    Assignment.objects.filter(machine=estate.research_vm).update(
        assigned_at=noon - datetime.timedelta(days=1)
    )
    assert upcoming_runs([gold], Machine.objects.all(), now=noon)[gold.pk].at == noon

    listing = client_for("admin").get("/policies/").content.decode()
    assert "<th>Next run</th>" in listing and "due now" in listing
    runs = client_for("helpdesk").get("/runs/").content.decode()
    assert "Next scheduled" in runs and "gold</strong>" in runs and "1 machine" in runs  # only finance's
    assert "2 machines" in client_for("admin").get("/runs/").content.decode()
    services.update_policy(actor=None, policy=gold, enabled=False)
    assert "Next scheduled" not in client_for("admin").get("/runs/").content.decode()
