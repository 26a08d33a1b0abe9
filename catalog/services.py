"""The catalog's writes: repositories (with their encrypted passphrase and S3 keys) and recovery points."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from catalog.choices import PointKind
from catalog.models import RecoveryPoint, Repository
from catalog.repositories import initialise, new_passphrase
from connectors.base import ConnectorError
from core import audit
from core.models import User
from core.services import create_credential
from engine.errors import EngineError
from engine.repository import Snapshot
from inventory.models import Machine


class RepositoryRefused(Exception):
    """The repository cannot be created there; str() says why (nothing was saved)."""


def create_repository(
    *,
    actor: User | None,
    name: str,
    kind: str,
    path: str,
    passphrase: str = "",
    access_key: str = "",
    secret_key: str = "",
    **fields: Any,
) -> Repository:
    """Create a repository: its passphrase (generated when not given) and S3 keys are stored encrypted, then the
    engine initialises the format and keys at the location. All or nothing: a location that refuses leaves no
    row and no credential behind, so the same form can simply be sent again."""
    try:
        with transaction.atomic():
            credential = create_credential(
                actor=actor,
                name=f"repository {name}",
                kind="repository",
                username="",
                secret=passphrase or new_passphrase(),
            )
            if access_key or secret_key:
                fields["s3_credential"] = create_credential(
                    actor=actor, name=f"s3 {name}", kind="s3", username=access_key, secret=secret_key
                )
            repository = Repository.objects.create(
                name=name, kind=kind, path=path, passphrase=credential, **fields
            )
            initialise(repository)
            audit.record(
                "repository.create", actor=actor, target=repository, after={"kind": kind, "path": path}
            )
    except (EngineError, OSError, ConnectorError) as error:
        raise RepositoryRefused(f"The repository could not be created there: {error}") from None
    return repository


def record_point(
    *,
    machine: Machine,
    repository: Repository,
    run_id: int | None,
    snapshot: Snapshot,
    kind: str,
    consistent: bool,
    disks: list[dict[str, Any]],
) -> RecoveryPoint:
    """The row for a snapshot the engine has just committed (the one place a recovery point is recorded).

    Its figures are the snapshot's own: logical bytes, and what the run added to the repository."""
    if kind not in PointKind.values:
        raise ValueError(f"unknown point kind {kind!r}")
    stats = snapshot.stats
    return RecoveryPoint.objects.create(
        machine=machine,
        repository=repository,
        run_id=run_id,
        snapshot_id=snapshot.id,
        taken_at=snapshot.taken_at,
        kind=kind,
        logical_bytes=int(stats.get("logical_bytes", 0)),
        new_bytes=int(stats.get("new_bytes", 0)),
        stored_bytes=int(stats.get("stored_bytes", 0)),
        consistent=consistent,
        disks=disks,
    )
