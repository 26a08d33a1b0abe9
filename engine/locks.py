"""Leases: who is working on a repository. They expire when their process stops refreshing them (a killed
backup never blocks anything for longer than its lease), and all times come from the storage's clock."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from engine.errors import EngineError, LockedError
from engine.storage import Storage

LOCKS = "locks/"
LEASE_SECONDS = 300
# A lease is trusted for this fraction less than its life: the time to write what it protects.
HOLD_MARGIN = 0.2

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    id: str
    kind: str  # "backup" or "prune"
    hostname: str
    pid: int
    started: datetime.datetime
    expires: datetime.datetime


def _read_lease(storage: Storage, key: str) -> Lease:
    data = json.loads(storage.get(key))
    return Lease(
        id=key[len(LOCKS) :],
        kind=data["kind"],
        hostname=data["hostname"],
        pid=data["pid"],
        started=datetime.datetime.fromisoformat(data["started"]),
        expires=datetime.datetime.fromisoformat(data["expires"]),
    )


def live_leases(storage: Storage, *, kind: str | None = None) -> list[Lease]:
    now = storage.now()
    leases = []
    for info in storage.list(LOCKS):
        try:
            lease = _read_lease(storage, info.key)
        except (EngineError, ValueError, KeyError):
            continue  # being written or removed at this instant, or not a lease
        if lease.expires > now and (kind is None or lease.kind == kind):
            leases.append(lease)
    return leases


def _holder_is_dead(lease: Lease) -> bool:
    """A lease of this host whose process is gone (a killed prune): it would otherwise block for its life."""
    if lease.hostname != socket.gethostname() or lease.pid == os.getpid():
        return False
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


@dataclass
class UnlockReport:
    removed: list[str]
    refused: list[str]


def unlock(storage: Storage, *, force: bool = False) -> UnlockReport:
    """Remove stale leases: expired ones, and those of this host whose process is gone. A live lease of
    another host is refused (its backup or prune may still be running) unless `force`."""
    now = storage.now()
    report = UnlockReport([], [])
    for info in storage.list(LOCKS):
        name = info.key[len(LOCKS) :]
        try:
            lease = _read_lease(storage, info.key)
        except (EngineError, ValueError, KeyError, TypeError):
            storage.delete(info.key)  # not a lease at all
            report.removed.append(f"{name} (unreadable)")
            continue
        described = (
            f"{lease.kind} lease {name} of {lease.hostname} pid {lease.pid}, "
            f"since {lease.started:%Y-%m-%d %H:%M:%S} UTC"
        )
        if lease.expires <= now or _holder_is_dead(lease) or force:
            storage.delete(info.key)
            report.removed.append(described)
        else:
            report.refused.append(f"{described}, live until {lease.expires:%Y-%m-%d %H:%M:%S} UTC")
    return report


def _write_lease(
    storage: Storage, lease_id: str, kind: str, started: datetime.datetime | None, seconds: int
) -> datetime.datetime:
    now = storage.now()
    started = started or now
    record = {
        "kind": kind,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "started": started.isoformat(),
        "expires": (now + datetime.timedelta(seconds=seconds)).isoformat(),
    }
    # Not flushed: a lease must be visible to a prune at once, but one lost to a power cut died with its holder.
    storage.put(LOCKS + lease_id, json.dumps(record).encode(), durable=False)
    return started


def renew_lease(storage: Storage, lease_id: str, kind: str, *, seconds: int = LEASE_SECONDS) -> None:
    """Write or extend a lease that outlives any one process: an agent's backup spans many requests, each
    renewing it. It keeps the start of its first write, so a prune still treats everything uploaded since then
    as possibly in use; once the agent goes silent for `seconds` the lease lapses by itself."""
    started = None
    with contextlib.suppress(
        EngineError, ValueError, KeyError
    ):  # not there: first write, or lapsed and removed
        record = json.loads(storage.get(LOCKS + lease_id))
        if datetime.datetime.fromisoformat(record["expires"]) > storage.now():
            started = datetime.datetime.fromisoformat(record["started"])
        # A lapsed lease starts again from now: a prune may have run in the gap, so it protects nothing from
        # before; the caller refreshes its index after this and checks every chunk before it commits.
    _write_lease(storage, lease_id, kind, started, seconds)


def drop_lease(storage: Storage, lease_id: str) -> None:
    try:
        storage.delete(LOCKS + lease_id)
    except EngineError:
        logger.warning("could not remove the lease %s; it expires by itself", lease_id)


class LeaseHolder:
    """Holds a lease while a backup or prune runs, refreshing it in the background."""

    def __init__(
        self, storage: Storage, kind: str, *, seconds: int = LEASE_SECONDS, exclusive: bool = False
    ) -> None:
        self.storage = storage
        self.kind = kind
        self.seconds = seconds
        self.exclusive = exclusive
        self.id = os.urandom(16).hex()
        self.started: datetime.datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._confirmed = 0.0  # monotonic time of the last write that stored the lease

    def _write(self) -> None:
        before = time.monotonic()
        self.started = _write_lease(self.storage, self.id, self.kind, self.started, self.seconds)
        self._confirmed = before

    def check_held(self) -> None:
        """LockedError unless the lease has been held without a gap up to now, with a margin left: a writer
        that was stopped, or could not refresh its lease for most of its life, may have lost what it relied on."""
        left = self._confirmed + self.seconds - HOLD_MARGIN * self.seconds - time.monotonic()
        if self._thread is None or left <= 0:
            raise LockedError(
                f"the {self.kind} lease {self.id} lapsed (not refreshed for "
                f"{time.monotonic() - self._confirmed:.0f} s); nothing was committed: run it again"
            )

    def acquire(self) -> LeaseHolder:
        if self.exclusive:
            others = [
                lease for lease in live_leases(self.storage, kind=self.kind) if not _holder_is_dead(lease)
            ]
            if others:
                other = others[0]
                raise LockedError(
                    f"another {self.kind} runs on this repository ({other.hostname}, pid {other.pid}, "
                    f"since {other.started:%Y-%m-%d %H:%M:%S} UTC); its lease ends by "
                    f"{other.expires:%Y-%m-%d %H:%M:%S} UTC unless it is refreshed. If that process is gone, "
                    f"'unlock' removes its lease"
                )
        self._write()
        self._thread = threading.Thread(target=self._refresh, name=f"lease-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self._write()
            except EngineError:
                logger.warning("could not refresh the %s lease %s", self.kind, self.id, exc_info=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.storage.delete(LOCKS + self.id)
        except EngineError:
            logger.warning("could not remove the %s lease %s; it expires by itself", self.kind, self.id)

    def __enter__(self) -> LeaseHolder:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
