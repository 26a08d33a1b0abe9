"""The S3 back end against a real S3-compatible server (moto), including Object Lock and injected faults."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import boto3
import pytest

from engine.errors import ObjectMissing, StorageError
from engine.image import restore_image
from engine.maintenance import verify
from engine.repository import Repository
from engine.storage.s3 import MULTIPART_THRESHOLD, S3Storage
from tests.engine.faulty_proxy import FaultPlan, faulty_proxy
from tests.engine.helpers import BLOCK, PASSPHRASE, SMALL_PACK, backup, make_image


def new_bucket(endpoint: str, *, locked: bool = False) -> str:
    name = f"bulwark-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=locked)
    return name


def test_objects_ranges_multipart_listing_and_deletion(s3_endpoint: str) -> None:
    storage = S3Storage(bucket=new_bucket(s3_endpoint), prefix="repo", endpoint_url=s3_endpoint)
    storage.put("config", b"{}")
    big = bytes(range(256)) * (MULTIPART_THRESHOLD // 256 + 4096)
    storage.put("data/ab/abcdef", big)
    assert storage.get("data/ab/abcdef") == big
    assert storage.get("data/ab/abcdef", 1000, 10) == big[1000:1010]
    assert [info.key for info in storage.list("data/")] == ["data/ab/abcdef"]
    assert storage.stat("data/ab/abcdef").size == len(big)  # type: ignore[union-attr]
    with pytest.raises(ObjectMissing):
        storage.get("data/ab/abcdef", len(big) - 5, 10)  # a short read is never taken as data
    storage.delete("data/ab/abcdef")
    assert storage.stat("data/ab/abcdef") is None
    with pytest.raises(ObjectMissing):
        storage.get("nope")
    assert abs((storage.now() - datetime.datetime.now(datetime.UTC)).total_seconds()) < 60


def test_a_repository_on_s3_round_trips(s3_endpoint: str, tmp_path: Path) -> None:
    storage = S3Storage(bucket=new_bucket(s3_endpoint), endpoint_url=s3_endpoint)
    repository = Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    image = make_image(1024 * 1024, seed=4)
    snapshot = backup(repository, image)
    fresh = Repository.open(S3Storage(bucket=storage.bucket, endpoint_url=s3_endpoint), PASSPHRASE)
    restore_image(fresh, snapshot, "disk-0", tmp_path / "disk.img")
    assert (tmp_path / "disk.img").read_bytes() == bytes(image)
    assert verify(fresh, full=True).ok


def test_a_locked_object_cannot_be_deleted_early(s3_endpoint: str) -> None:
    storage = S3Storage(bucket=new_bucket(s3_endpoint, locked=True), endpoint_url=s3_endpoint)
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    storage.put("data/00/locked", b"immutable copy", retain_until=until)
    retained = storage.retention_of("data/00/locked")
    assert retained is not None and retained > datetime.datetime.now(datetime.UTC)
    with pytest.raises(StorageError, match="AccessDenied"):
        storage.delete("data/00/locked")
    assert storage.get("data/00/locked") == b"immutable copy"


def test_put_errors_are_retried_and_the_backup_completes(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = new_bucket(s3_endpoint)
    Repository.init(S3Storage(bucket=bucket, endpoint_url=s3_endpoint), PASSPHRASE, block_size=BLOCK)
    plan = FaultPlan(method="PUT", path=r"/data/", mode="error", remaining=2)
    with faulty_proxy(s3_endpoint, plan) as proxy:
        storage = S3Storage(bucket=bucket, endpoint_url=proxy, max_attempts=1)
        repository = Repository.open(storage, PASSPHRASE)
        repository.pack_target = SMALL_PACK
        repository.upload_retry_delay = 0.01
        image = make_image(512 * 1024, seed=8)
        snapshot = backup(repository, image)
    assert plan.failed == 2
    fresh = Repository.open(S3Storage(bucket=bucket, endpoint_url=s3_endpoint), PASSPHRASE)
    restore_image(fresh, snapshot, "disk-0", tmp_path / "disk.img")
    assert (tmp_path / "disk.img").read_bytes() == bytes(image)


@pytest.mark.parametrize("mode", ["error", "hang"])
def test_a_backup_whose_packs_are_not_stored_never_commits(s3_endpoint: str, mode: str) -> None:
    bucket = new_bucket(s3_endpoint)
    Repository.init(S3Storage(bucket=bucket, endpoint_url=s3_endpoint), PASSPHRASE, block_size=BLOCK)
    plan = FaultPlan(method="PUT", path=r"/data/", mode=mode, remaining=-1, hang_seconds=3)
    with faulty_proxy(s3_endpoint, plan) as proxy:
        storage = S3Storage(bucket=bucket, endpoint_url=proxy, max_attempts=1, timeout_seconds=1)
        repository = Repository.open(storage, PASSPHRASE)
        repository.pack_target = SMALL_PACK
        repository.upload_retry_delay = 0.01
        with pytest.raises(StorageError):
            backup(repository, make_image(256 * 1024, seed=9))
    fresh = Repository.open(S3Storage(bucket=bucket, endpoint_url=s3_endpoint), PASSPHRASE)
    assert fresh.snapshot_ids() == []
    assert verify(fresh).ok


def test_an_immutable_copy_cannot_be_forgotten_or_pruned_early(s3_endpoint: str, tmp_path: Path) -> None:
    storage = S3Storage(bucket=new_bucket(s3_endpoint, locked=True), endpoint_url=s3_endpoint)
    repository = Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    repository.retain_for = datetime.timedelta(days=30)
    image = make_image(512 * 1024, seed=14)
    snapshot = backup(repository, image)
    pack = next(iter(storage.list("data/"))).key
    assert storage.retention_of(pack) > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=29)  # type: ignore[operator]
    with pytest.raises(StorageError, match="AccessDenied"):
        repository.forget_snapshot(snapshot.id)
    with pytest.raises(StorageError, match="AccessDenied"):
        storage.delete(pack)
    restore_image(Repository.open(storage, PASSPHRASE), snapshot, "disk-0", tmp_path / "disk.img")
    assert (tmp_path / "disk.img").read_bytes() == bytes(image)
