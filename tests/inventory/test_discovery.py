"""Discovery against vcsim: machines by identity, history, failures that keep the inventory, watches that
protect a clone at once."""

from __future__ import annotations

import time

import pytest

from core.services import create_credential
from inventory import discovery
from inventory.choices import ChangeKind, DiscoveryState, DiscoveryTrigger, SourceState
from inventory.models import DiscoveryRun, Machine, MachineChange, Source
from inventory.services import create_source
from protection import services as protection
from protection.choices import AlertKind, RuleMode
from protection.models import Alert, Assignment
from tests.connectors.vsphere_helpers import Admin
from tests.peers import Vcsim


def make_source(server: Vcsim, actor: object = None, **fields: object) -> Source:
    values: dict[str, object] = {
        "name": f"vc-{server.port}",
        "kind": "vcenter",
        "address": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "thumbprint": server.thumbprint(),
        "jurisdiction": "EU",
    }
    return create_source(actor=actor, **{**values, **fields})  # type: ignore[arg-type]


def discover(source: Source) -> DiscoveryRun:
    run = DiscoveryRun.objects.create(source=source, trigger=DiscoveryTrigger.MANUAL)
    return discovery.run_discovery(run.pk)


@pytest.mark.django_db
def test_discovery_creates_machines_with_facts_and_history(vcsim: Vcsim) -> None:
    source = make_source(vcsim)
    run = discover(source)
    assert run.state == DiscoveryState.SUCCEEDED, run.error
    machines = Machine.objects.filter(source=source)
    assert run.found == run.added == machines.count() >= 4
    vm = machines.get(name="DC0_C0_RP0_VM0")
    assert vm.identity.startswith("vsphere:") and vm.jurisdiction == "EU"
    assert vm.cluster == "DC0_C0" and vm.datastores == ["LocalDS_0"] and vm.disks.count() == 1
    assert MachineChange.objects.filter(machine=vm, kind=ChangeKind.DISCOVERED).exists()
    source.refresh_from_db()
    assert source.state == SourceState.OK and source.product.startswith("VMware vCenter")
    assert source.topology["clusters"] == ["DC0_C0"]
    # A second run with nothing changed changes nothing.
    again = discover(source)
    assert (again.added, again.updated, again.gone) == (0, 0, 0)


@pytest.mark.django_db
def test_rename_and_move_keep_the_machine_and_its_history(vcsim: Vcsim) -> None:
    source = make_source(vcsim)
    discover(source)
    before = Machine.objects.get(name="DC0_C0_RP0_VM0")
    admin = Admin(vcsim)
    admin.rename("DC0_C0_RP0_VM0", "erp-db-01")
    admin.close()
    run = discover(source)
    after = Machine.objects.get(pk=before.pk)
    assert after.name == "erp-db-01" and after.identity == before.identity
    assert run.updated == 1 and run.added == 0
    assert MachineChange.objects.filter(machine=after, kind=ChangeKind.RENAMED).exists()


@pytest.mark.django_db
def test_a_vm_that_disappears_is_marked_gone_never_deleted(vcsim: Vcsim) -> None:
    source = make_source(vcsim)
    discover(source)
    admin = Admin(vcsim)
    admin.destroy("DC0_H0_VM1")
    admin.close()
    run = discover(source)
    gone = Machine.objects.get(name="DC0_H0_VM1")
    assert run.gone == 1 and gone.gone_since is not None
    assert MachineChange.objects.filter(machine=gone, kind=ChangeKind.GONE).exists()


@pytest.mark.django_db
def test_an_unreachable_source_fails_the_run_and_keeps_the_inventory(vcsim: Vcsim) -> None:
    source = make_source(vcsim)
    discover(source)
    present = Machine.objects.filter(source=source, gone_since__isnull=True).count()
    vcsim.stop()
    run = discover(source)
    assert run.state == DiscoveryState.FAILED and run.error_code == "unreachable"
    assert "refused the connection" in run.error
    assert Machine.objects.filter(source=source, gone_since__isnull=True).count() == present
    source.refresh_from_db()
    assert source.state == SourceState.FAILED and source.last_error == run.error
    alert = Alert.objects.open().get(kind=AlertKind.DISCOVERY_FAILED)
    assert source.name in alert.message


@pytest.mark.django_db
def test_bad_credentials_and_an_untrusted_certificate_are_named(vcsim: Vcsim) -> None:
    wrong = make_source(vcsim, name="wrong")
    wrong.credential.set_secret("not-the-password")
    wrong.credential.save()
    run = discover(wrong)
    assert run.error_code == "bad-credentials"
    untrusted = create_source(
        actor=None,
        name="untrusted",
        kind="vcenter",
        address="127.0.0.1",
        port=vcsim.port,
        credential=create_credential(
            actor=None, name="c2", kind="vsphere", username=vcsim.username, secret=vcsim.password
        ),
    )
    run = discover(untrusted)
    assert run.error_code == "untrusted-certificate" and "SHA-256" in run.error


@pytest.mark.django_db
def test_a_discovered_machine_is_assigned_by_rule_and_alerted_when_no_rule_matches(
    vcsim: Vcsim, settings
) -> None:  # type: ignore[no-untyped-def]
    gold = protection.create_policy(actor=None, name="gold")
    protection.create_rule(actor=None, name="cluster", policy=gold, match_host="DC0_C0")
    source = make_source(vcsim)
    discover(source)
    clustered = Machine.objects.filter(source=source, cluster="DC0_C0")
    assert clustered.count() >= 2
    assert Assignment.objects.filter(machine__in=clustered, policy=gold).count() == clustered.count()
    lone = Machine.objects.get(name="DC0_H0_VM0")
    assert not Assignment.objects.filter(machine=lone).exists()
    settings.BULWARK_UNPROTECTED_GRACE_MINUTES = 0
    result = protection.check_unprotected()
    assert result["raised"] == 2  # the two VMs on the standalone host
    assert Alert.objects.open().get(kind=AlertKind.UNPROTECTED).machines.filter(pk=lone.pk).exists()
    protection.create_rule(
        actor=None, name="standalone", policy=gold, match_host="DC0_H0", mode=RuleMode.ASSIGN_AND_REMOVE
    )
    protection.check_unprotected()
    assert not Alert.objects.open().filter(kind=AlertKind.UNPROTECTED).exists()


@pytest.mark.django_db(transaction=True)
def test_a_clone_is_under_a_policy_within_seconds(vcsim: Vcsim) -> None:
    """The promise: a VM cloned at 3 a.m. is protected before its first backup window."""
    from inventory.watch import SourceWatcher

    gold = protection.create_policy(actor=None, name="gold")
    protection.create_rule(actor=None, name="erp clones", policy=gold, match_name="erp-*")
    source = make_source(vcsim)
    discover(source)
    watcher = SourceWatcher(source.pk)
    watcher.start()
    try:
        time.sleep(1.0)
        admin = Admin(vcsim)
        admin.clone("DC0_C0_RP0_VM0", "erp-app-02")
        cloned_at = time.monotonic()
        deadline = cloned_at + 20
        assignment = None
        while time.monotonic() < deadline:
            assignment = Assignment.objects.filter(machine__name="erp-app-02").select_related("rule").first()
            if assignment is not None:
                break
            time.sleep(0.1)
        admin.close()
    finally:
        watcher.stop()
        watcher.join(timeout=15)
    assert assignment is not None, "the clone was not protected"
    assert assignment.rule is not None and assignment.rule.name == "erp clones"
    assert "erp clones" in assignment.reason
    clone = Machine.objects.get(name="erp-app-02")
    original = Machine.objects.get(name="DC0_C0_RP0_VM0")
    assert clone.identity != original.identity and clone.source_id == source.pk


@pytest.mark.django_db
def test_a_hyperv_cluster_is_discovered_through_winrm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Contract test: the WinRM server answers with recorded PowerShell JSON (no Windows host exists here)."""
    from tests.connectors.winrm_helpers import PASSWORD, USER, start_server

    server = start_server(tmp_path)
    try:
        source = create_source(
            actor=None,
            name="hv-cluster",
            kind="hyperv",
            address="127.0.0.1",
            port=server.port,
            username=USER,
            password=PASSWORD,
            ca_certificate=server.ca.read_text(),
            options={"transport": "ntlm", "https": True},
        )
        run = discover(source)
    finally:
        server.process.terminate()
        server.process.wait(timeout=10)
    assert run.state == DiscoveryState.SUCCEEDED, run.error
    sql = Machine.objects.get(identity="hyperv:8e2a6d4c-5b1f-4c1e-9a55-3f4d2b7e9a01")
    assert (sql.platform, sql.cluster, sql.host) == ("hyperv", "HVC01", "HV01")
    assert sql.disks.count() == 2 and sql.facts["checkpoints"] == ["before patch 2026-11"]
    source.refresh_from_db()
    assert source.remote_id == "HVC01" and source.topology["hosts"] == ["HV01", "HV02"]


@pytest.mark.django_db
def test_a_vmotion_keeps_the_machine_and_records_the_move(vcsim: Vcsim) -> None:
    from tests.connectors.vsphere_helpers import migrate

    source = make_source(vcsim)
    discover(source)
    machine = Machine.objects.get(name="DC0_C0_RP0_VM0")
    target = next(h for h in ("DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2") if h != machine.host)
    admin = Admin(vcsim)
    migrate(admin, "DC0_C0_RP0_VM0", target)
    admin.close()
    discover(source)
    moved = Machine.objects.get(pk=machine.pk)
    assert moved.host == target and moved.identity == machine.identity
    change = MachineChange.objects.get(machine=moved, kind=ChangeKind.MOVED)
    assert "vMotion" in change.summary and target in change.summary


@pytest.mark.django_db
def test_a_discovery_never_marks_gone_what_the_watch_saw_while_it_read(vcsim: Vcsim) -> None:
    """The inventory is read first and written later; a clone the watch recorded meanwhile is not "missing",
    and a VM the watch saw destroyed meanwhile is not brought back by the older list."""
    from connectors.base import Change
    from connectors.vsphere import VSphereConnector
    from inventory.discovery import apply_changes

    source = make_source(vcsim)
    discover(source)
    admin = Admin(vcsim)

    class WatchedWhileReading(VSphereConnector):
        def discover(self, progress=None):  # type: ignore[no-untyped-def]
            inventory = super().discover()
            # While this inventory travels to the database, the watch records a clone and a removal.
            admin.clone("DC0_C0_RP0_VM0", "cloned-meanwhile")
            clone = next(m for m in super().discover().machines if m.name == "cloned-meanwhile")
            removed = next(m for m in inventory.machines if m.name == "DC0_H0_VM1")
            admin.destroy("DC0_H0_VM1")
            apply_changes(
                source,
                [
                    Change(kind="upsert", machine=clone),
                    Change(kind="remove", external_id=removed.external_id),
                ],
            )
            return inventory

    run = DiscoveryRun.objects.create(source=source, trigger=DiscoveryTrigger.MANUAL)
    run = discovery.run_discovery(run.pk, factory=WatchedWhileReading)
    admin.close()
    assert run.state == DiscoveryState.SUCCEEDED
    assert Machine.objects.get(name="cloned-meanwhile").gone_since is None
    assert Machine.objects.get(name="DC0_H0_VM1").gone_since is not None
    assert run.gone == 0


@pytest.mark.django_db
def test_two_sources_reporting_one_instance_id_keep_their_machines_apart(vcsim: Vcsim) -> None:
    """A cloned vCenter appliance (or the same vCenter added twice) reports the same instanceUuids: machines
    never flip between the sources, and the admin is told about the pair."""
    from protection.choices import AlertKind
    from protection.models import Alert

    first = make_source(vcsim, name="prod vc")
    second = make_source(vcsim, name="copy of prod vc", address="localhost")
    for _ in range(2):
        assert discover(first).state == DiscoveryState.SUCCEEDED
        assert discover(second).state == DiscoveryState.SUCCEEDED
    ours, theirs = Machine.objects.filter(source=first), Machine.objects.filter(source=second)
    assert ours.count() == theirs.count() > 0
    assert set(ours.values_list("native_identity", flat=True)) == set(
        theirs.values_list("native_identity", flat=True)
    )
    assert all(m.identity == f"{m.native_identity}@{second.pk}" for m in theirs)  # unique snapshot names
    assert not MachineChange.objects.filter(kind=ChangeKind.MOVED).exists()  # no flipping between sources
    assert not Machine.objects.filter(gone_since__isnull=False).exists()
    alert = Alert.objects.open().get(kind=AlertKind.DUPLICATE_SOURCE, key=f"duplicate-source:{second.pk}")
    assert "prod vc" in alert.message and "backed up twice" in alert.message


@pytest.mark.django_db
def test_a_source_added_again_takes_back_its_machines(vcsim: Vcsim) -> None:
    from inventory.services import delete_source

    first = make_source(vcsim)
    discover(first)
    before = dict(Machine.objects.values_list("native_identity", "pk"))
    delete_source(actor=None, source=first)
    again = make_source(vcsim, name="the same vc again")
    discover(again)
    after = dict(Machine.objects.filter(source=again).values_list("native_identity", "pk"))
    assert after == before
    assert MachineChange.objects.filter(
        kind=ChangeKind.MOVED, summary__contains="reported again"
    ).count() == len(before)


@pytest.mark.django_db
def test_a_failed_discovery_keeps_the_phase_it_failed_in(vcsim: Vcsim) -> None:
    """Each phase is written as it starts, however fast it follows the last one; the failure keeps it."""
    from connectors.base import Unreachable
    from connectors.vsphere import VSphereConnector

    source = make_source(vcsim)

    class FailsReadingVms(VSphereConnector):
        def discover(self, progress=None):  # type: ignore[no-untyped-def]
            progress.step(0, 3, "reading the topology")
            progress.step(1, 3, "reading tags")
            progress.step(2, 3, "reading virtual machines")
            raise Unreachable("lost the connection during discovery")

    run = DiscoveryRun.objects.create(source=source, trigger=DiscoveryTrigger.MANUAL)
    run = discovery.run_discovery(run.pk, factory=FailsReadingVms)
    run.refresh_from_db()
    assert run.state == DiscoveryState.FAILED and run.error_code == "unreachable"
    assert run.phase == "reading virtual machines"


@pytest.mark.django_db
def test_a_discovery_whose_process_died_does_not_block_the_next_one(settings) -> None:  # type: ignore[no-untyped-def]
    """A run left "running" by a dead process (or "queued" with a lost task) used to be returned to every later
    request, so the source was never discovered again. Now it ends, saying why, and a new run is queued."""
    import datetime
    import socket
    import subprocess
    import sys

    from django.utils import timezone

    source = create_source(
        actor=None, name="vc", kind="vcenter", address="127.0.0.1", port=1, username="u", password="p"
    )
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = f"{socket.gethostname()}:{int(ended.stdout)}"
    zombie = DiscoveryRun.objects.create(
        source=source,
        trigger=DiscoveryTrigger.WATCH,
        state=DiscoveryState.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        worker=dead,
    )
    fresh = discovery.queue_discovery(source=source, actor=None)
    assert fresh.pk != zombie.pk and fresh.state == DiscoveryState.QUEUED
    zombie.refresh_from_db()
    assert zombie.state == DiscoveryState.FAILED and zombie.error_code == "lost"
    assert zombie.error == f"the process running it ({dead}) is gone"
    # A live, recent run is waited for; a queued one whose task never arrived is not, after the stale time.
    assert discovery.queue_discovery(source=source, actor=None).pk == fresh.pk
    DiscoveryRun.objects.filter(pk=fresh.pk).update(
        queued_at=timezone.now() - datetime.timedelta(seconds=settings.BULWARK_RUN_STALE_SECONDS + 1)
    )
    again = discovery.queue_discovery(source=source, actor=None)
    assert again.pk != fresh.pk
    assert (
        DiscoveryRun.objects.get(pk=fresh.pk).error == "its task never reached a worker (lost in a restart)"
    )
