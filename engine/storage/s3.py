"""A repository in an S3-compatible bucket (boto3): multipart for large objects, SHA-256 checksums, and
optional Object Lock retention for immutable copies."""

from __future__ import annotations

import contextlib
import datetime
import email.utils
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from engine.errors import ObjectMissing, StorageError
from engine.storage import ObjectInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        lock_mode: str = "COMPLIANCE",
        timeout_seconds: float = 60,
        max_attempts: int = 5,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.lock_mode = lock_mode
        try:
            self.client: S3Client = client or boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region or "us-east-1",
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(
                    connect_timeout=timeout_seconds,
                    read_timeout=timeout_seconds,
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                ),
            )
        except (BotoCoreError, ValueError) as error:  # e.g. an endpoint that is not a URL
            raise StorageError(f"cannot use S3 endpoint {endpoint_url!r}: {error}") from error

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _fail(self, action: str, key: str, error: Exception) -> StorageError:
        code = error.response.get("Error", {}).get("Code", "") if isinstance(error, ClientError) else ""
        return StorageError(
            f"{action} {key} on {self.describe()} failed: {code or type(error).__name__}: {error}"
        )

    def _lock_arguments(self, retain_until: datetime.datetime | None) -> dict[str, Any]:
        if retain_until is None:
            return {}
        return {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": retain_until}

    def put(
        self, key: str, data: bytes, *, retain_until: datetime.datetime | None = None, durable: bool = True
    ) -> None:
        name = self._key(key)
        lock = self._lock_arguments(retain_until)
        try:
            if len(data) < MULTIPART_THRESHOLD:
                self.client.put_object(
                    Bucket=self.bucket, Key=name, Body=data, ChecksumAlgorithm="SHA256", **lock
                )
                return
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256", **lock
            )
            upload_id = upload["UploadId"]
            try:
                parts = []
                for number, start in enumerate(range(0, len(data), PART_SIZE), start=1):
                    answer = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data[start : start + PART_SIZE],
                        ChecksumAlgorithm="SHA256",
                    )
                    parts.append(
                        {
                            "PartNumber": number,
                            "ETag": answer["ETag"],
                            "ChecksumSHA256": answer.get("ChecksumSHA256"),
                        }
                    )
                completed = [{k: v for k, v in part.items() if v is not None} for part in parts]
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": completed},  # type: ignore[typeddict-item]
                )
            except BaseException:
                # Leave no orphan parts behind (they would be billed and never used).
                with contextlib.suppress(BotoCoreError, ClientError):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
                raise
        except (BotoCoreError, ClientError) as error:
            raise self._fail("upload of", key, error) from error

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            arguments["Range"] = f"bytes={offset}-{end}"
        try:
            body = self.client.get_object(**arguments)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "InvalidRange"):
                raise ObjectMissing(
                    f"{key} is missing (or shorter than expected) on {self.describe()}"
                ) from None
            raise self._fail("download of", key, error) from error
        except BotoCoreError as error:
            raise self._fail("download of", key, error) from error
        if length is not None and len(body) != length:
            raise ObjectMissing(f"{key} is shorter than expected (truncated) on {self.describe()}")
        return bytes(body)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail("stat of", key, error) from error
        except BotoCoreError as error:  # no answer at all: a refused connection, a bad endpoint, a time-out
            raise self._fail("stat of", key, error) from error
        return ObjectInfo(key, head["ContentLength"], head["LastModified"])

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][len(self.prefix) :], item["Size"], item["LastModified"])
        except (BotoCoreError, ClientError) as error:
            raise self._fail("listing of", prefix, error) from error

    def delete(self, key: str) -> None:
        name = self._key(key)
        try:
            versions = self.client.list_object_versions(Bucket=self.bucket, Prefix=name).get("Versions", [])
            targets = [v for v in versions if v["Key"] == name]
            if not targets:
                self.client.delete_object(Bucket=self.bucket, Key=name)
            for version in targets:
                # Deleting the version (not adding a delete marker) is what Object Lock refuses while retained.
                self.client.delete_object(Bucket=self.bucket, Key=name, VersionId=version["VersionId"])
        except (BotoCoreError, ClientError) as error:
            raise self._fail("deletion of", key, error) from error

    def retention_of(self, key: str) -> datetime.datetime | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as error:
            raise self._fail("retention read of", key, error) from error
        return head.get("ObjectLockRetainUntilDate")

    def now(self) -> datetime.datetime:
        try:
            answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key("config"), MaxKeys=1)
        except (BotoCoreError, ClientError) as error:
            raise self._fail("clock read of", "bucket", error) from error
        date = answer["ResponseMetadata"]["HTTPHeaders"].get("date")
        if date:
            return email.utils.parsedate_to_datetime(date).astimezone(datetime.UTC)
        return datetime.datetime.now(datetime.UTC)
