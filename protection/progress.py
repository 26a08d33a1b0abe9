"""Run progress over Channels: the engine's Progress protocol, throttled, with rate and ETA, and the cancel check.

One message every PROGRESS_INTERVAL at most (plus the last one of a phase), to the machine's groups (its run page,
the dashboard, the scoped help-desk and owners). The database row is updated at the same pace, so a page that
lost its socket polls the same figures.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from core.events import publish_machine_events
from protection.models import BackupRun

PROGRESS_INTERVAL = 0.25
CANCEL_CHECK_INTERVAL = 1.0


class RunCancelled(Exception):
    """Someone pressed cancel: the writer aborts, nothing is committed."""


def cancel_requested(run_pk: int) -> bool:
    return BackupRun.objects.filter(pk=run_pk, cancel_requested=True).exists()


class RunProgress:
    def __init__(self, run: BackupRun, *, total: int) -> None:
        self.run = run
        self.total = total
        self.offset = 0  # bytes of the disks already done (the engine reports per disk)
        self.started = time.monotonic()
        self._last_sent = 0.0
        self._last_cancel_check = time.monotonic()
        self._cancelled = threading.Event()
        self._thread = threading.get_ident()  # the run's own thread: the only one that asks the database
        self._rate = 0.0
        self._last_done = 0
        self._last_time = self.started
        self.disk = ""

    def next_disk(self, name: str, offset: int) -> None:
        self.disk, self.offset = name, offset

    def check_cancel(self, *, now: bool = False) -> None:
        """Raise RunCancelled once someone asked to cancel. The run's thread asks the database (at most every
        CANCEL_CHECK_INTERVAL, or `now`); a reader thread (a throttled read waiting) sees what it found."""
        if self._cancelled.is_set():
            raise RunCancelled()
        if threading.get_ident() != self._thread:
            return
        moment = time.monotonic()
        if not now and moment - self._last_cancel_check < CANCEL_CHECK_INTERVAL:
            return
        self._last_cancel_check = moment
        if cancel_requested(self.run.pk):
            self._cancelled.set()
            self.send("cancelling: stopping the reads and removing the snapshot")
            raise RunCancelled()

    def step(self, done: int, total: int | None, phase: str) -> None:
        self.check_cancel()
        now = time.monotonic()
        absolute = self.offset + done
        finished_phase = total is not None and done >= total
        if now - self._last_sent < PROGRESS_INTERVAL and not finished_phase:
            return
        elapsed = now - self._last_time
        if elapsed > 0:
            instant = (absolute - self._last_done) / elapsed
            self._rate = instant if self._rate == 0 else 0.7 * self._rate + 0.3 * instant
        self._last_done, self._last_time, self._last_sent = absolute, now, now
        self.send(self._in_words(phase), absolute)

    def _in_words(self, phase: str) -> str:
        """The engine names a disk by its key ("reading 2000"); people know it by label and machine."""
        if not self.disk:
            return phase
        where = f"disk '{self.disk}' of {self.run.machine.name}"
        for engine_words, words in (
            ("writing changed areas of ", "writing the changed areas of "),
            ("reading changed areas of ", "reading the changed areas of "),
            ("reading ", "reading "),
        ):
            if phase.startswith(engine_words):
                return words + where
        return phase

    def send(self, phase: str, done: int | None = None, **extra: Any) -> None:
        done = self._last_done if done is None else done
        report(self.run, phase=phase, done=done, total=self.total, rate=self._rate, disk=self.disk, **extra)


def report(
    run: BackupRun, *, phase: str, done: int, total: int, rate: float, disk: str = "", **extra: Any
) -> None:
    """Record a run's figures on its row and send them to everyone watching its machine."""
    BackupRun.objects.filter(pk=run.pk).update(
        bytes_done=done, bytes_total=total, rate=rate, phase=phase[:200], current_disk=disk[:200]
    )
    eta = (total - done) / rate if rate > 0 and total else None
    publish_machine_events(
        "run.progress",
        [
            (
                run.machine,
                {
                    "run": run.pk,
                    "phase": phase,
                    "disk": disk,
                    "done": done,
                    "total": total,
                    "rate": round(rate),
                    "eta": round(eta) if eta is not None else None,
                    "at": time.time(),  # when the step was sent (clients can show staleness)
                    **extra,
                },
            )
        ],
    )
