"""Engine repositories behind the console's Repository rows: created here, and kept open per process.

Opening a repository costs a passphrase derivation (scrypt) and loading its index; a worker keeps both between
runs and only reads the index files other writers added since (refresh_index), which is what makes a
changed-block incremental cost tenths of a second rather than seconds.
"""

from __future__ import annotations

import datetime
import secrets
import threading
from pathlib import Path

from django.conf import settings

from catalog.choices import RepositoryKind
from catalog.models import RecoveryPoint, Repository
from connectors import outbound
from engine.repository import Repository as EngineRepository
from engine.repository import Snapshot
from engine.storage import Storage
from engine.storage.local import LocalStorage

_open: dict[tuple[int, str], EngineRepository] = {}
_lock = threading.Lock()


def storage_for(repository: Repository) -> Storage:
    if repository.kind == RepositoryKind.S3:
        from engine.storage.s3 import S3Storage

        bucket, _, prefix = repository.path.partition("/")
        if repository.endpoint:
            outbound.check(repository.endpoint, settings.BULWARK_OUTBOUND_NETWORKS)
        access = repository.s3_credential
        return S3Storage(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=repository.endpoint or None,
            access_key=access.username if access else None,
            secret_key=access.reveal() if access else None,
        )
    path = Path(repository.path)
    if not path.is_absolute():
        path = Path(settings.DATA_DIR) / path
    return LocalStorage(path)


def new_passphrase() -> str:
    return secrets.token_urlsafe(32)


def initialise(repository: Repository) -> EngineRepository:
    """Create the engine repository (format, keys) for a new Repository row."""
    engine = EngineRepository.init(
        storage_for(repository), repository.passphrase.reveal(), block_size=repository.block_size
    )
    _configure(repository, engine)
    return engine


def open_repository(repository: Repository, *, refresh: bool = True) -> EngineRepository:
    """The engine repository, opened once per process (and passphrase change), with a fresh view of its index
    (`refresh=False` when the caller renews a lease first and refreshes after it)."""
    key = (repository.pk, repository.passphrase.secret_changed_at.isoformat())
    with _lock:
        engine = _open.get(key)
        if engine is None:
            engine = EngineRepository.open(storage_for(repository), repository.passphrase.reveal())
            _open[key] = engine
    _configure(repository, engine)
    if refresh:
        engine.refresh_index()
    return engine


def open_point(point: RecoveryPoint) -> tuple[EngineRepository, Snapshot]:
    """A recovery point's repository (opened as above) and its snapshot manifest."""
    engine = open_repository(point.repository)
    return engine, engine.load_snapshot(point.snapshot_id)


def check_reachable(repository: Repository) -> str:
    """Why the repository cannot be used now ("" when its storage answers and holds its config)."""
    from connectors.base import ConnectorError
    from engine.errors import EngineError

    try:
        if storage_for(repository).stat("config") is None:
            return "its storage answers but holds no repository there (moved, deleted, or not mounted?)"
    except (EngineError, OSError, ConnectorError) as error:
        return str(error)[:1000]
    return ""


def forget_open_repositories() -> None:
    with _lock:
        _open.clear()


def _configure(repository: Repository, engine: EngineRepository) -> None:
    engine.retain_for = (
        datetime.timedelta(days=repository.immutable_days) if repository.immutable_days else None
    )
    engine.index_checkpoint_seconds = float(settings.BULWARK_INDEX_CHECKPOINT_SECONDS)
