"""Leases: who is working on a repository. They expire when their process stops refreshing them (a killed
backup never blocks anything for longer than its lease), and all times come from the storage's clock."""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass

from engine.errors import EngineError, LockedError
from engine.storage import Storage

LOCKS = "locks/"
LEASE_SECONDS = 300

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    id: str
    kind: str  # "backup" or "prune"
    hostname: str
    pid: int
    started: datetime.datetime
    expires: datetime.datetime


def live_leases(storage: Storage, *, kind: str | None = None) -> list[Lease]:
    now = storage.now()
    leases = []
    for info in storage.list(LOCKS):
        try:
            data = json.loads(storage.get(info.key))
            lease = Lease(
                id=info.key[len(LOCKS) :],
                kind=data["kind"],
                hostname=data["hostname"],
                pid=data["pid"],
                started=datetime.datetime.fromisoformat(data["started"]),
                expires=datetime.datetime.fromisoformat(data["expires"]),
            )
        except (EngineError, ValueError, KeyError):
            continue  # being written or removed at this instant, or not a lease
        if lease.expires > now and (kind is None or lease.kind == kind):
            leases.append(lease)
    return leases


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

    def _write(self) -> None:
        now = self.storage.now()
        if self.started is None:
            self.started = now
        record = {
            "kind": self.kind,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started.isoformat(),
            "expires": (now + datetime.timedelta(seconds=self.seconds)).isoformat(),
        }
        self.storage.put(LOCKS + self.id, json.dumps(record).encode())

    def acquire(self) -> LeaseHolder:
        if self.exclusive:
            others = [lease for lease in live_leases(self.storage, kind=self.kind)]
            if others:
                other = others[0]
                raise LockedError(
                    f"another {self.kind} runs on this repository ({other.hostname}, pid {other.pid}, "
                    f"since {other.started:%Y-%m-%d %H:%M:%S} UTC); its lease ends by {other.expires:%H:%M:%S} UTC"
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
