"""Agentless vSphere backups end to end on vcsim: snapshot, datastore reads, engine, commit, snapshot removed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from catalog import repositories
from catalog.models import RecoveryPoint
from catalog.services import create_repository
from engine.image import restore_image
from engine.maintenance import verify
from inventory.models import Machine
from protection import services
from protection.backup import cancel_run, run_backup, start_backup
from protection.choices import AlertKind, RunState
from protection.models import Alert, BackupRun
from tests.conftest import Estate
from tests.connectors.vsphere_helpers import Admin, snapshot_count, upload_disk
from tests.engine.conftest import s3_endpoint  # noqa: F401  (fixture)
from tests.inventory.test_discovery import discover, make_source
from tests.peers import Vcsim


def disk_image(size: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    image = bytearray(size)
    for start in range(0, size, 256 * 1024):
        kind = rng.random()
        if kind < 0.4:
            image[start : start + 64 * 1024] = rng.randbytes(64 * 1024)
        elif kind < 0.7:
            image[start : start + 128 * 1024] = (b"ext4 superblock inode " * 6000)[: 128 * 1024]
    return bytes(image)


@pytest.fixture
def protected_vm(vcsim: Vcsim, tmp_path: Path, settings) -> tuple[Machine, bytes, Vcsim]:  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    image = disk_image(6 * 1024 * 1024)
    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM0", image)
    admin.close()
    source = make_source(vcsim)
    discover(source)
    repository = create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))
    policy = services.create_policy(actor=None, name="gold")
    services.update_policy(actor=None, policy=policy, rpo_minutes=60)
    policy.repository = repository
    policy.save()
    services.create_rule(actor=None, name="all", policy=policy, match_name="DC0_H0_VM0")
    return Machine.objects.get(name="DC0_H0_VM0"), image, vcsim


@pytest.mark.django_db
def test_a_vm_is_backed_up_and_restores_bit_identical(protected_vm, estate: Estate, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    machine, image, vcsim = protected_vm
    run = start_backup(machine=machine, requested_by=estate.admin)
    assert run.state == RunState.QUEUED
    run = run_backup(run.pk)
    assert run.state == RunState.COMMITTED, run.error
    assert run.bytes_done == run.bytes_total == len(image) and run.bytes_new > 0
    point = RecoveryPoint.objects.get(run=run)
    assert (
        point.machine == machine
        and point.logical_bytes == len(image)
        and point.disks[0]["capacity"] == len(image)
    )
    engine = repositories.open_repository(run.repository)
    snapshot = engine.load_snapshot(point.snapshot_id)
    restore_image(engine, snapshot, point.disks[0]["key"], tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == image
    assert not verify(engine).problems
    admin = Admin(vcsim)
    assert snapshot_count(admin, "DC0_H0_VM0") == 0  # the backup's snapshot is gone
    admin.close()
    # A second delivery of the same message does nothing; a second run reuses every block.
    assert run_backup(run.pk).state == RunState.COMMITTED
    second = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert second.state == RunState.COMMITTED and second.bytes_new == 0


@pytest.mark.django_db
def test_an_unreachable_vcenter_fails_the_run_with_the_reason_and_an_alert(
    protected_vm, estate: Estate
) -> None:  # type: ignore[no-untyped-def]
    machine, _, vcsim = protected_vm
    vcsim.stop()
    run = run_backup(start_backup(machine=machine, requested_by=estate.admin).pk)
    assert run.state == RunState.FAILED and "refused the connection" in run.error
    assert Alert.objects.open().filter(kind=AlertKind.RUN_FAILED, machine=machine).exists()
    assert not RecoveryPoint.objects.exists()


@pytest.mark.django_db
def test_a_queued_run_can_be_cancelled_and_then_never_runs(protected_vm, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    machine, _, _ = protected_vm
    run = start_backup(machine=machine, requested_by=estate.admin)
    assert start_backup(machine=machine, requested_by=estate.admin).pk == run.pk  # one active run per machine
    cancelled = cancel_run(run=run, actor=estate.admin)
    assert cancelled.state == RunState.CANCELLED
    assert run_backup(run.pk).state == RunState.CANCELLED
    assert BackupRun.objects.get(pk=run.pk).started_at is None


@pytest.mark.django_db
def test_changed_block_tracking_reads_only_what_changed(protected_vm, estate: Estate, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Run 1 enables CBT and reads everything; run 2 reads the changed areas since run 1's change id (through
    QueryChangedDiskAreas on vcsim, paged); the result restores bit-identical; a rejected change id falls back to
    a whole read with a CBT-reset alert."""
    machine, image, vcsim = protected_vm
    first = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert first.state == RunState.COMMITTED and first.full_read
    point = RecoveryPoint.objects.get(run=first)
    assert (
        point.disks[0]["why_full"] == "no earlier recovery point of this disk" and point.disks[0]["change_id"]
    )
    day2 = bytearray(image)
    rng = random.Random(99)
    for block in rng.sample(range(len(image) // 65536), 9):  # scattered 64 KiB changes
        day2[block * 65536 : block * 65536 + 65536] = rng.randbytes(65536)
    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM0", bytes(day2))
    admin.close()
    second = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert second.state == RunState.COMMITTED, second.error
    assert not second.full_read and second.bytes_total == 9 * 65536
    steps = [step["text"] for step in second.steps]  # the run's step log, in order
    assert steps[0].startswith("snapshot taken") and "changed area(s)" in steps[1] and "(CBT)" in steps[1]
    assert steps[-1].startswith("snapshot removed; recovery point")
    first_steps = [step["text"] for step in first.steps]
    assert first_steps[:2] == ["changed-block tracking enabled on the VM", "snapshot taken (quiesced)"]
    assert "every block is read (no earlier recovery point of this disk)" in first_steps[2]
    engine = repositories.open_repository(second.repository)
    point2 = RecoveryPoint.objects.get(run=second)
    restore_image(
        engine, engine.load_snapshot(point2.snapshot_id), point2.disks[0]["key"], tmp_path / "day2.img"
    )
    assert (tmp_path / "day2.img").read_bytes() == bytes(day2)

    # A change id vSphere no longer accepts (CBT reset): the next run reads the whole disk and says why.
    RecoveryPoint.objects.filter(pk=point2.pk).update(
        disks=[{**point2.disks[0], "change_id": "52 00 00 00 00 00 00 00-vm00/999"}]
    )
    third = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert third.state == RunState.COMMITTED and third.full_read and third.bytes_new == 0
    assert "rejected change id" in RecoveryPoint.objects.get(run=third).disks[0]["why_full"]
    assert Alert.objects.open().filter(kind=AlertKind.CBT_RESET, machine=machine).exists()


@pytest.mark.django_db
def test_retention_keeps_what_the_policy_says_and_prune_reclaims_the_rest(
    protected_vm, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from protection.retention import prune_repository

    machine, image, vcsim = protected_vm
    policy = machine.assignment.policy
    services.update_policy(actor=None, policy=policy)
    type(policy).objects.filter(pk=policy.pk).update(keep_last=2, keep_daily=0, keep_weekly=0, keep_monthly=0)
    rng = random.Random(5)
    for day in range(3):
        changed = bytearray(image)
        changed[day * 65536 : day * 65536 + 65536] = rng.randbytes(65536)
        admin = Admin(vcsim)
        upload_disk(admin, "DC0_H0_VM0", bytes(changed))
        admin.close()
        run = run_backup(start_backup(machine=machine, requested_by=None).pk)
        assert run.state == RunState.COMMITTED, run.error
    points = RecoveryPoint.objects.filter(machine=machine)
    assert points.count() == 2
    engine = repositories.open_repository(run.repository)
    assert sorted(s.id for s in engine.snapshots()) == sorted(points.values_list("snapshot_id", flat=True))
    report = prune_repository(run.repository)
    assert report["marked_packs"] + report["deleted_packs"] + report["repacked_packs"] >= 0
    assert not verify(engine).problems


@pytest.mark.django_db
def test_each_point_is_copied_to_an_immutable_s3_tier(protected_vm, s3_endpoint: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A copy target on S3 with Object Lock: every committed point is copied (re-keyed for the target), locked
    against early deletion, and restores bit-identical from the copy alone."""
    import datetime

    from core.services import create_credential
    from engine.errors import StorageError
    from protection.models import CopyTarget
    from tests.engine.test_s3 import new_bucket

    machine, image, _ = protected_vm
    bucket = new_bucket(s3_endpoint, locked=True)
    keys = create_credential(actor=None, name="s3", kind="s3", username="test", secret="test")
    archive = create_repository(
        actor=None,
        name="archive",
        kind="s3",
        path=f"{bucket}/bulwark",
        endpoint=s3_endpoint,
        s3_credential=keys,
        immutable_days=30,
        tier="archive",
    )
    CopyTarget.objects.create(policy=machine.assignment.policy, repository=archive, keep_last=5)
    run = run_backup(start_backup(machine=machine, requested_by=None).pk)
    assert run.state == RunState.COMMITTED, run.error
    copy = RecoveryPoint.objects.get(repository=archive, machine=machine)
    engine = repositories.open_repository(archive)
    restore_image(
        engine, engine.load_snapshot(copy.snapshot_id), copy.disks[0]["key"], tmp_path / "from-archive.img"
    )
    assert (tmp_path / "from-archive.img").read_bytes() == image
    manifest = f"bulwark/snapshots/{copy.snapshot_id}"
    retained = engine.storage.retention_of(manifest.removeprefix("bulwark/"))  # type: ignore[attr-defined]
    assert retained is not None and retained > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=29
    )
    with pytest.raises(StorageError):
        engine.storage.delete(manifest.removeprefix("bulwark/"))


@pytest.mark.django_db
def test_guest_scripts_run_inside_the_vm_through_vmware_tools(
    protected_vm, estate: Estate, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """On vcsim the guest of a powered-on VM is this machine (tests/peer_tools/vcsim/guest.go), so a script's
    effect shows up here; the calls are the real StartProgramInGuest / ListProcessesInGuest over SOAP."""
    from protection.models import Policy
    from tests.peers import GUEST_PASSWORD, GUEST_USER

    machine, _, vcsim = protected_vm
    policy = Policy.objects.get(name="gold")
    policy.pre_script = f'echo "frozen $BULWARK_SNAPSHOT" > {tmp_path}/pre'
    policy.post_script = f"echo thawed > {tmp_path}/post"
    policy.save()
    refused = run_backup(start_backup(machine=machine, requested_by=estate.admin).pk)
    assert refused.state == RunState.FAILED and "no guest login" in refused.error

    services.set_guest_login(actor=None, policy=policy, username=GUEST_USER, password="wrong")
    wrong = run_backup(start_backup(machine=machine, requested_by=estate.admin).pk)
    assert wrong.state == RunState.FAILED and "refused the login of 'root'" in wrong.error
    assert "wrong" not in wrong.error

    services.set_guest_login(actor=None, policy=policy, username=GUEST_USER, password=GUEST_PASSWORD)
    done = run_backup(start_backup(machine=machine, requested_by=estate.admin).pk)
    assert done.state == RunState.COMMITTED, done.error
    assert (tmp_path / "pre").read_text() == f"frozen bulwark-run-{done.pk}\n"
    assert (tmp_path / "post").read_text() == "thawed\n"

    # A failing pre-script stops the backup before any snapshot; a failing post-script only warns.
    policy.pre_script = "exit 3"
    policy.save()
    stopped = run_backup(start_backup(machine=machine, requested_by=estate.admin).pk)
    assert stopped.state == RunState.FAILED and "exited with 3" in stopped.error
    policy.pre_script, policy.post_script = "true", "exit 5"
    policy.save()
    warned = run_backup(start_backup(machine=machine, requested_by=estate.admin).pk)
    assert (
        warned.state == RunState.COMMITTED
        and "post-snapshot script in the guest exited with 5" in warned.phase
    )
    admin = Admin(vcsim)
    assert snapshot_count(admin, "DC0_H0_VM0") == 0  # every snapshot was removed, whatever the scripts did
    admin.close()
