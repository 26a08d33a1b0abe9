"""Auto-protection rules: order, exclusions that always win, modes, people's choices, and the trace."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from inventory.models import Machine
from protection import services
from protection.choices import AlertKind, RuleAction, RuleMode
from protection.models import Alert, Assignment
from protection.rules import evaluate
from tests.conftest import Estate
from tests.factories import MachineFactory


def vm(**fields: object) -> Machine:
    defaults: dict[str, object] = {
        "name": "erp-db-01",
        "tags": ["backup:gold", "env:prod"],
        "folder": "/Production/ERP",
        "resource_pool": "Resources/Prod",
        "host": "esx-03",
        "cluster": "CL-A",
        "guest_os": "Microsoft Windows Server 2022 (64-bit)",
    }
    return MachineFactory(**{**defaults, **fields})  # type: ignore[no-any-return]


@pytest.mark.django_db
def test_first_matching_rule_in_order_assigns_and_the_trace_says_why() -> None:
    machine = vm()
    gold, silver = (
        services.create_policy(actor=None, name="gold"),
        services.create_policy(actor=None, name="silver"),
    )
    services.create_rule(
        actor=None, name="windows", policy=silver, match_guest_os="*windows*", position=20, apply=False
    )
    services.create_rule(actor=None, name="gold tag", policy=gold, match_tags="backup:gold", position=10)
    assignment = Assignment.objects.get(machine=machine)
    assert (assignment.policy, assignment.rule.name) == (gold, "gold tag")  # type: ignore[union-attr]
    decision = evaluate(machine, list(services._rules()))
    assert [r.rule.name for r in decision.trace] == ["gold tag", "windows"]
    assert decision.trace[0].matched and decision.trace[0].criteria[0].actual == "backup:gold, env:prod"
    assert "comes first" in decision.trace[1].note


@pytest.mark.django_db
def test_an_exclusion_wins_wherever_it_stands() -> None:
    kept, excluded = vm(name="erp-app-01"), vm(name="erp-scratch-02")
    gold = services.create_policy(actor=None, name="gold")
    services.create_rule(
        actor=None, name="no scratch", action=RuleAction.EXCLUDE, match_name="*-scratch*", position=90
    )
    services.create_rule(actor=None, name="all prod", policy=gold, match_folder="/Production", position=10)
    assert Assignment.objects.filter(machine=kept).exists()
    assert not Assignment.objects.filter(machine=excluded).exists()
    decision = evaluate(excluded, list(services._rules()))
    assert decision.excluded_by is not None and "excluded" in decision.summary


@pytest.mark.django_db
def test_folder_patterns_cover_subfolders_and_patterns_are_case_insensitive() -> None:
    gold = services.create_policy(actor=None, name="gold")
    rule = services.create_rule(actor=None, name="prod", policy=gold, match_folder="/production", apply=False)
    assert evaluate(vm(folder="/Production/ERP/DB"), [rule]).policy == gold
    assert evaluate(vm(folder="/Productionish"), [rule]).policy is None
    assert evaluate(vm(folder="/Test"), [rule]).policy is None


@pytest.mark.django_db
def test_assign_only_keeps_the_policy_and_assign_and_remove_follows_the_rule() -> None:
    a, b = vm(name="a", tags=["keep"]), vm(name="b", tags=["follow"])
    gold = services.create_policy(actor=None, name="gold")
    keep = services.create_rule(actor=None, name="keep", policy=gold, match_tags="keep")
    follow = services.create_rule(
        actor=None, name="follow", policy=gold, match_tags="follow", mode=RuleMode.ASSIGN_AND_REMOVE
    )
    assert Assignment.objects.filter(machine__in=[a, b]).count() == 2
    for machine in (a, b):
        machine.tags = []
        machine.save()
    counts = services.apply_rules([a, b])
    assert counts == {"assigned": 0, "changed": 0, "removed": 1}
    assert Assignment.objects.get(machine=a).rule == keep
    assert not Assignment.objects.filter(machine=b).exists()
    assert follow.pk


@pytest.mark.django_db
def test_a_persons_assignment_is_never_changed_by_rules(estate: Estate) -> None:
    gold, bronze = (
        services.create_policy(actor=None, name="gold"),
        services.create_policy(actor=None, name="bronze"),
    )
    machine = vm(name="special")
    services.assign_policy(actor=estate.admin, machine=machine, policy=bronze, reason="ticket 4711")
    services.create_rule(
        actor=None, name="everything erp", policy=gold, match_name="*", mode=RuleMode.ASSIGN_AND_REMOVE
    )
    assignment = Assignment.objects.get(machine=machine)
    assert assignment.policy == bronze and assignment.rule is None and assignment.reason == "ticket 4711"
    services.assign_policy(actor=estate.admin, machine=machine, policy=None)  # back to the rules
    assert Assignment.objects.get(machine=machine).policy == gold


@pytest.mark.django_db
def test_unprotected_alerts_wait_for_the_grace_period_and_close_when_protected(settings) -> None:  # type: ignore[no-untyped-def]
    settings.BULWARK_UNPROTECTED_GRACE_MINUTES = 30
    young = vm(name="young")
    old = vm(name="old", first_seen=timezone.now() - datetime.timedelta(hours=2))
    excluded = vm(name="tmp-1", first_seen=timezone.now() - datetime.timedelta(hours=2))
    template = vm(name="tpl", template=True, first_seen=timezone.now() - datetime.timedelta(hours=2))
    services.create_rule(actor=None, name="no tmp", action=RuleAction.EXCLUDE, match_name="tmp-*")
    result = services.check_unprotected()
    open_alerts = Alert.objects.open().filter(kind=AlertKind.UNPROTECTED)
    assert result["raised"] == 1 and [list(a.machines.all()) for a in open_alerts] == [[old]]
    assert services.check_unprotected()["raised"] == 0  # listed once
    gold = services.create_policy(actor=None, name="gold")
    services.create_rule(actor=None, name="old ones", policy=gold, match_name="old")
    assert not Alert.objects.open().filter(kind=AlertKind.UNPROTECTED).exists()
    assert young.pk and excluded.pk and template.pk


@pytest.mark.django_db
def test_moving_a_rule_reorders_and_reapplies() -> None:
    machine = vm(name="x1")
    gold, silver = (
        services.create_policy(actor=None, name="gold"),
        services.create_policy(actor=None, name="silver"),
    )
    first = services.create_rule(
        actor=None, name="first", policy=gold, match_name="x*", mode=RuleMode.ASSIGN_AND_REMOVE
    )
    second = services.create_rule(
        actor=None, name="second", policy=silver, match_name="x*", mode=RuleMode.ASSIGN_AND_REMOVE
    )
    assert Assignment.objects.get(machine=machine).policy == gold
    services.move_rule(actor=None, rule=second, direction=-1)
    assert Assignment.objects.get(machine=machine).policy == silver
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.position < first.position


@pytest.mark.django_db
def test_two_thousand_unprotected_machines_are_one_alert_and_one_mail(
    settings, estate, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    """An alert storm: one check that finds 2,000 machines raises one alert that lists them and sends one
    digest; machines joining later add to it (one more digest), and it follows the latest cause."""
    from django.core import mail

    from protection.models import AlertMachine

    settings.BULWARK_UNPROTECTED_GRACE_MINUTES = 0
    estate.admin.email = "alice@example.com"
    estate.admin.save()
    Machine.objects.bulk_create(
        [
            Machine(
                identity=f"vsphere:storm-{n}",
                native_identity=f"vsphere:storm-{n}",
                name=f"vm-{n:04d}",
                kind="vm",
                platform="vsphere",
            )
            for n in range(2000)
        ]
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = services.check_unprotected()
    assert result["raised"] == 2003  # the storm machines and the estate's three
    assert Alert.objects.filter(kind=AlertKind.UNPROTECTED).count() == 1
    assert len(mail.outbox) == 1 and "2003 more machine(s)" in mail.outbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        assert services.check_unprotected()["raised"] == 0
    assert len(mail.outbox) == 1  # nothing new, no mail
    gold = services.create_policy(actor=None, name="gold")
    services.create_rule(actor=None, name="storm", policy=gold, match_name="vm-*")
    alert = Alert.objects.open().get(kind=AlertKind.UNPROTECTED)
    assert alert.machines.count() == 3  # the rule took 2,000 off the list at once
    services.create_rule(actor=None, name="the rest", policy=gold, match_name="*")
    assert not Alert.objects.open().filter(kind=AlertKind.UNPROTECTED).exists()
    assert AlertMachine.objects.count() == 0


@pytest.mark.django_db
def test_an_open_alert_follows_the_latest_cause() -> None:
    first = services.raise_alert(kind=AlertKind.RUN_FAILED, key="run:x", message="disk 1 unreadable")
    assert first is not None
    assert services.raise_alert(kind=AlertKind.RUN_FAILED, key="run:x", message="repository full") is None
    first.refresh_from_db()
    assert first.message == "repository full"


@pytest.mark.django_db
def test_the_unprotected_check_first_gives_a_machine_the_policy_its_rule_says(settings) -> None:  # type: ignore[no-untyped-def]
    """A machine that a rule matches but that never got its policy (its process died between the inventory write
    and the rules) is assigned by the periodic check, not reported as unprotected forever."""
    settings.BULWARK_UNPROTECTED_GRACE_MINUTES = 0
    gold = services.create_policy(actor=None, name="gold")
    services.create_rule(actor=None, name="erp", policy=gold, match_name="erp-*")
    missed = vm(name="erp-07")  # written without the rules, as a crash would leave it
    Assignment.objects.filter(machine=missed).delete()
    result = services.check_unprotected()
    assert result["caught_up"] == 1 and result["unprotected"] == 0
    assert Assignment.objects.get(machine=missed).policy == gold
    assert not Alert.objects.open().filter(kind=AlertKind.UNPROTECTED).exists()
