"""Schedules, retries with back-off, RPO alerts and their e-mail."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from django.core import mail
from django.utils import timezone

from catalog import repositories
from catalog.services import create_repository
from protection import services
from protection.choices import AlertKind, RunState, RunTrigger
from protection.models import Alert, Assignment, BackupRun
from protection.schedule import check_rpo, schedule_due
from tests.conftest import Estate


@pytest.fixture
def policy(estate: Estate, tmp_path: Path, settings):  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    policy = services.create_policy(actor=None, name="hourly", rpo_minutes=90)
    type(policy).objects.filter(pk=policy.pk).update(repository=repository, interval_minutes=60)
    policy.refresh_from_db()
    services.assign_policy(actor=estate.admin, machine=estate.finance_vm, policy=policy)
    return policy


@pytest.mark.django_db
def test_due_machines_are_queued_once_and_again_after_the_interval(policy, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    first = schedule_due()
    assert [run.machine for run in first] == [estate.finance_vm] and first[0].trigger == RunTrigger.SCHEDULE
    assert schedule_due() == []  # its run is still queued
    BackupRun.objects.filter(pk=first[0].pk).update(state=RunState.COMMITTED, finished_at=timezone.now())
    assert schedule_due() == []
    later = timezone.now() + datetime.timedelta(minutes=61)
    assert [run.machine for run in schedule_due(now=later)] == [estate.finance_vm]


@pytest.mark.django_db
def test_a_failed_run_is_retried_with_back_off(policy, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    run = schedule_due()[0]
    now = timezone.now()
    BackupRun.objects.filter(pk=run.pk).update(
        state=RunState.FAILED, finished_at=now, error="vCenter unreachable"
    )
    assert schedule_due(now=now + datetime.timedelta(minutes=2)) == []  # back-off: 5 minutes after attempt 1
    retry = schedule_due(now=now + datetime.timedelta(minutes=6))
    assert len(retry) == 1 and retry[0].trigger == RunTrigger.RETRY
    assert BackupRun.objects.get(pk=retry[0].pk).attempt == 2


@pytest.mark.django_db
def test_a_missed_rpo_raises_a_critical_alert_by_mail(
    policy, estate: Estate, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    estate.admin.email = "alice@example.com"
    estate.admin.save()
    Assignment.objects.filter(machine=estate.finance_vm).update(
        assigned_at=timezone.now() - datetime.timedelta(hours=3)
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = check_rpo()
    assert result["raised"] == 1
    assert mail.outbox and mail.outbox[0].to == ["alice@example.com"] and "RPO" in mail.outbox[0].subject
    alert = Alert.objects.open().get(kind=AlertKind.RPO_MISSED)
    entry = alert.entries.get()
    assert "never backed up" in entry.cause and entry.machine == estate.finance_vm
    assert check_rpo()["raised"] == 0  # listed once


@pytest.mark.django_db
def test_backups_start_only_inside_the_window_even_overnight(policy, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    policy.window_start, policy.window_end = datetime.time(22, 0), datetime.time(6, 0)
    policy.save()
    day = datetime.datetime(2026, 11, 25, 14, 0, tzinfo=datetime.UTC)  # TIME_ZONE is UTC in the tests
    night = datetime.datetime(2026, 11, 25, 23, 30, tzinfo=datetime.UTC)
    early = datetime.datetime(2026, 11, 26, 5, 59, tzinfo=datetime.UTC)
    assert not policy.in_window(day) and policy.in_window(night) and policy.in_window(early)
    assert schedule_due(now=day) == []
    assert [run.machine for run in schedule_due(now=night)] == [estate.finance_vm]


@pytest.mark.django_db
def test_an_admin_configures_a_repository_and_a_policy_from_the_pages(
    estate: Estate, client_for, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from catalog.models import Repository
    from protection.models import Policy

    admin = client_for("admin")
    response = admin.post(
        "/repositories/",
        {
            "name": "nas",
            "kind": "local",
            "path": str(tmp_path / "nas"),
            "tier": "primary",
            "immutable_days": 0,
        },
    )
    assert response.status_code == 302, response.content
    repository = Repository.objects.get(name="nas")
    assert (tmp_path / "nas" / "config").exists()  # the engine repository exists
    response = admin.post(
        "/repositories/",
        {"name": "cloud", "kind": "s3", "path": "bucket", "tier": "copy", "immutable_days": 0},
    )
    assert response.status_code == 200 and "needs an access key" in response.content.decode()
    fields = {
        "name": "nightly",
        "enabled": "on",
        "repository": repository.pk,
        "interval_minutes": 1440,
        "rpo_minutes": 1500,
        "priority": 3,
        "quiesce": "on",
        "keep_last": 7,
        "keep_daily": 14,
        "keep_weekly": 4,
        "keep_monthly": 6,
        "keep_yearly": 0,
        "full_every_days": 30,
        "window_start": "22:00",
        "window_end": "06:00",
        "bandwidth_limit_mbps": "",
        "mode": "agentless",
        "dedup_location": "proxy",
    }
    response = admin.post("/policies/new/", fields)
    assert response.status_code == 302, response.content
    policy = Policy.objects.get(name="nightly")
    assert policy.repository == repository and policy.window_start == datetime.time(22, 0)
    response = admin.post("/policies/new/", {**fields, "name": "broken", "window_end": ""})
    assert response.status_code == 200 and "both ends" in response.content.decode()
    agent_fields = {**fields, "name": "servers", "mode": "agent", "dedup_location": "agent"}
    response = admin.post("/policies/new/", {**agent_fields, "schedule_cron": "every night"})
    page = response.content.decode()
    assert response.status_code == 200 and "five fields" in page and "needs paths or volumes" in page
    response = admin.post(
        "/policies/new/",
        {
            **agent_fields,
            "schedule_cron": "15 1 * * *",
            "include_paths": "/etc\r\n/srv\r\n",
            "pre_script": "sync",
        },
    )
    assert response.status_code == 302, response.content
    servers = Policy.objects.get(name="servers")
    assert servers.include_paths == "/etc\n/srv" and servers.schedule_cron == "15 1 * * *"


@pytest.mark.django_db
def test_a_cron_schedule_replaces_the_interval(policy, estate: Estate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TIME_ZONE = "UTC"
    type(policy).objects.filter(pk=policy.pk).update(schedule_cron="30 22 * * 1-5")  # weekdays 22:30
    wednesday = datetime.datetime(2026, 11, 25, 22, 0, tzinfo=datetime.UTC)
    Assignment.objects.filter(machine=estate.finance_vm).update(
        assigned_at=wednesday - datetime.timedelta(hours=10)
    )
    # A newly assigned machine waits for its policy's schedule: nothing at 12:00 or 22:00 ...
    assert schedule_due(now=wednesday - datetime.timedelta(hours=10)) == []
    assert schedule_due(now=wednesday) == []
    first = schedule_due(now=wednesday + datetime.timedelta(minutes=31))[0]  # ... its first run at 22:30
    BackupRun.objects.filter(pk=first.pk).update(
        state=RunState.COMMITTED, queued_at=wednesday - datetime.timedelta(hours=20), finished_at=wednesday
    )
    assert schedule_due(now=wednesday) == []  # 22:00: the day's fire time has not come (an interval would)
    assert len(schedule_due(now=wednesday + datetime.timedelta(minutes=31))) == 1  # 22:31
    latest = BackupRun.objects.filter(machine=estate.finance_vm).order_by("-queued_at").first()
    BackupRun.objects.filter(pk=latest.pk).update(  # type: ignore[union-attr]
        state=RunState.COMMITTED, queued_at=wednesday + datetime.timedelta(minutes=31)
    )
    saturday = datetime.datetime(2026, 11, 28, 22, 45, tzinfo=datetime.UTC)
    friday_missed = schedule_due(
        now=saturday
    )  # Thursday's and Friday's fire times passed: one run catches up
    assert len(friday_missed) == 1


@pytest.mark.django_db
def test_the_policy_api_checks_cron_and_agent_fields(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for("admin")
    bad = admin.post(
        "/api/policies/",
        {"name": "nightly", "schedule_cron": "61 * * * *", "mode": "agent", "include_paths": "etc"},
        content_type="application/json",
    )
    assert bad.status_code == 400
    assert set(bad.json()) == {"schedule_cron", "include_paths"}
    missing = admin.post(
        "/api/policies/", {"name": "nightly", "mode": "agent"}, content_type="application/json"
    )
    assert missing.status_code == 400 and "include_paths" in missing.json()
    good = admin.post(
        "/api/policies/",
        {"name": "nightly", "schedule_cron": "0  2 * * *", "mode": "agent", "include_paths": "/etc\n /srv "},
        content_type="application/json",
    )
    assert good.status_code == 201, good.json()
    assert good.json()["schedule_cron"] == "0 2 * * *" and good.json()["include_paths"] == "/etc\n/srv"


@pytest.mark.django_db
def test_copy_targets_are_managed_on_the_policy_page_and_the_api(policy, estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    offsite = create_repository(
        actor=None, name="offsite", kind="local", path="offsite", tier="copy", site="dr"
    )
    admin = client_for("admin")
    page = admin.get(f"/policies/{policy.pk}/").content.decode()
    assert "No copies yet" in page and "offsite" in page
    own = admin.post(
        f"/policies/{policy.pk}/copies/",
        {
            "repository": policy.repository.pk,
            "keep_last": 3,
            "keep_daily": 0,
            "keep_weekly": 0,
            "keep_monthly": 0,
            "keep_yearly": 0,
        },
        follow=True,
    )
    assert "Cannot add the copy" in own.content.decode()  # the policy's own repository is not offered
    nothing = {
        "repository": offsite.pk,
        "keep_last": 0,
        "keep_daily": 0,
        "keep_weekly": 0,
        "keep_monthly": 0,
        "keep_yearly": 0,
    }
    assert (
        "must keep something"
        in admin.post(f"/policies/{policy.pk}/copies/", nothing, follow=True).content.decode()
    )
    added = admin.post(
        f"/policies/{policy.pk}/copies/", {**nothing, "keep_last": 5, "keep_yearly": 7}, follow=True
    )
    assert "now copies every recovery point to offsite" in added.content.decode()
    target = policy.copy_targets.get()
    assert (target.repository, target.keep_last, target.keep_yearly) == (offsite, 5, 7)
    again = admin.post(
        "/api/copy-targets/", {"policy": policy.pk, "repository": offsite.pk}, content_type="application/json"
    )
    assert again.status_code == 400 and "already" in again.json()["repository"][0]
    assert admin.delete(f"/api/copy-targets/{target.pk}/").status_code == 204
    created = admin.post(
        "/api/copy-targets/",
        {"policy": policy.pk, "repository": offsite.pk, "keep_last": 2},
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["keep_last"] == 2
    removed = admin.post(f"/policies/{policy.pk}/copies/", {"remove": created.json()["id"]}, follow=True)
    assert "no longer copies to offsite" in removed.content.decode() and not policy.copy_targets.exists()
    assert client_for("helpdesk").get("/api/copy-targets/").status_code == 403


@pytest.mark.django_db
def test_the_guest_login_of_a_policy_is_stored_encrypted_and_kept_when_not_retyped(
    policy, client_for
) -> None:  # type: ignore[no-untyped-def]
    admin = client_for("admin")
    form = {
        "name": policy.name,
        "enabled": "on",
        "repository": policy.repository.pk,
        "interval_minutes": 60,
        "rpo_minutes": 90,
        "priority": 5,
        "quiesce": "on",
        "keep_last": 7,
        "keep_daily": 14,
        "keep_weekly": 8,
        "keep_monthly": 12,
        "keep_yearly": 0,
        "full_every_days": 30,
        "mode": "agentless",
        "dedup_location": "proxy",
        "pre_script": "/usr/local/bin/freeze-db",
    }
    missing = admin.post(f"/policies/{policy.pk}/", {**form, "guest_username": "backup"})
    assert missing.status_code == 200 and "password" in missing.content.decode()
    assert (
        admin.post(
            f"/policies/{policy.pk}/", {**form, "guest_username": "backup", "guest_password": "s3cret!"}
        ).status_code
        == 302
    )
    policy.refresh_from_db()
    credential = policy.guest_credential
    assert credential is not None and credential.username == "backup" and credential.reveal() == "s3cret!"
    assert "s3cret!" not in admin.get(f"/policies/{policy.pk}/").content.decode()
    admin.post(f"/policies/{policy.pk}/", {**form, "guest_username": "svc-backup"})  # password kept
    credential.refresh_from_db()
    assert credential.username == "svc-backup" and credential.reveal() == "s3cret!"
    admin.post(f"/policies/{policy.pk}/", {**form, "guest_username": ""})
    policy.refresh_from_db()
    assert policy.guest_credential is None


def test_every_policy_field_is_in_a_section_of_the_page() -> None:
    from protection.forms import PolicyForm

    placed = [name for _, _, names, _ in PolicyForm.SECTIONS for name in names]
    assert sorted(placed) == sorted(PolicyForm().fields) and len(placed) == len(set(placed))
