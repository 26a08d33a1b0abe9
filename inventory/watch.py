"""Live watches on vSphere sources: a thread per source follows WaitForUpdatesEx and applies each change at once.

Runs inside the web process of the embedded install (manage.py serve) or as its own process in production
(manage.py watch_sources). Every connection that the source answers is followed by a full discovery, so what
changed while no watch ran (a dropped connection, a console restart mid-batch) is never lost. A watch that
cannot connect backs off exponentially (2 s doubling to 5 min), and starts again from 2 s only after a healthy
answer; the source page shows the watch's state.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable

from django.db import close_old_connections
from django.utils import timezone

from connectors.base import Change, Connector, ConnectorError, Endpoint
from connectors.registry import connector_for
from inventory.choices import DiscoveryTrigger, SourceKind, WatchState
from inventory.discovery import apply_changes, queue_discovery
from inventory.models import Source

logger = logging.getLogger(__name__)

WATCHABLE = (SourceKind.VCENTER, SourceKind.ESXI)
BACKOFF_FIRST = 2.0
BACKOFF_CAP = 300.0


def _human_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class SourceWatcher(threading.Thread):
    def __init__(
        self,
        source_id: int,
        *,
        factory: Callable[[Endpoint], Connector] = connector_for,
        backoff_first: float = BACKOFF_FIRST,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        super().__init__(name=f"watch-source-{source_id}", daemon=True)
        self.source_id = source_id
        self.factory = factory
        self.backoff_first = backoff_first
        self.backoff_cap = backoff_cap
        self.stop_event = threading.Event()
        self.changes_applied = 0
        self.connections = 0  # healthy connections so far
        self.attempts = 0

    def stop(self) -> None:
        self.stop_event.set()

    def _on_change(self, changes: list[Change]) -> None:
        close_old_connections()
        source = Source.objects.select_related("credential").get(pk=self.source_id)
        apply_changes(source, changes)
        self.changes_applied += len(changes)

    def _on_connected(self) -> None:
        """The source answered: the watch is healthy. A full discovery covers whatever changed while no watch
        ran; changes from now on arrive through the watch (the collector was set up before this answer)."""
        close_old_connections()
        self.connections += 1
        self._state(WatchState.WATCHING, "")
        source = Source.objects.get(pk=self.source_id)
        queue_discovery(source=source, actor=None, trigger=DiscoveryTrigger.WATCH)

    def _state(self, state: str, detail: str) -> None:
        Source.objects.filter(pk=self.source_id).update(
            watch_state=state, watch_detail=detail[:500], watch_changed_at=timezone.now()
        )

    def run(self) -> None:
        delay = self.backoff_first
        last_reason = ""
        try:
            while not self.stop_event.is_set():
                connected_before = self.connections
                reason = ""
                try:
                    close_old_connections()
                    source = Source.objects.select_related("credential").get(pk=self.source_id)
                    connector = self.factory(source.endpoint(timeout=30.0))
                    self.attempts += 1
                    self._state(WatchState.CONNECTING, "")
                    connector.watch(self._on_change, self.stop_event, self._on_connected)
                except Source.DoesNotExist:
                    return
                except ConnectorError as error:
                    reason = str(error)
                except Exception as error:
                    reason = f"unexpected error: {type(error).__name__}: {error}"
                    logger.exception("watch on source %s failed", self.source_id)
                finally:
                    close_old_connections()
                if self.stop_event.is_set():
                    break
                if self.connections > connected_before:
                    delay = self.backoff_first  # it was healthy: start the back-off again
                reason = reason or "the watch ended"
                # One warning when a watch is lost or its reason changes, not one per retry.
                log = logger.warning if reason != last_reason else logger.debug
                log(
                    "watch on source %s lost: %s; retrying in %s",
                    self.source_id,
                    reason,
                    _human_seconds(delay),
                )
                last_reason = reason
                retry_at = timezone.now() + datetime.timedelta(seconds=delay)
                self._state(WatchState.RETRYING, f"{reason} — retrying at {retry_at:%H:%M:%S} UTC")
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.backoff_cap)
        finally:
            close_old_connections()
            try:
                self._state(WatchState.OFF, "")
            finally:
                close_old_connections()


class WatchManager(threading.Thread):
    """Keeps one watcher per enabled vSphere source with watch on, checking every `interval` seconds."""

    def __init__(self, *, interval: float = 15.0) -> None:
        super().__init__(name="watch-manager", daemon=True)
        self.interval = interval
        self.watchers: dict[int, SourceWatcher] = {}
        self.stop_event = threading.Event()

    def sync(self) -> None:
        close_old_connections()
        wanted = set(
            Source.objects.filter(enabled=True, watch=True, kind__in=WATCHABLE).values_list("pk", flat=True)
        )
        for source_id in list(self.watchers):
            if source_id not in wanted or not self.watchers[source_id].is_alive():
                self.watchers.pop(source_id).stop()
        for source_id in wanted - set(self.watchers):
            watcher = SourceWatcher(source_id)
            watcher.start()
            self.watchers[source_id] = watcher

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.sync()
            except Exception:
                logger.exception("could not refresh the source watches")
            self.stop_event.wait(self.interval)
        for watcher in self.watchers.values():
            watcher.stop()

    def stop(self) -> None:
        self.stop_event.set()
