"""Live watches on vSphere sources: a thread per source follows WaitForUpdatesEx and applies each change at once.

Runs inside the web process of the embedded install (manage.py serve) or as its own process in production
(manage.py watch_sources). A watch that loses its source reconnects with back-off; the scheduled discovery
remains the safety net (and the only place that marks machines gone for not being listed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import close_old_connections

from connectors.base import Change, Connector, ConnectorError, Endpoint
from connectors.registry import connector_for
from inventory.choices import SourceKind
from inventory.discovery import apply_changes
from inventory.models import Source

logger = logging.getLogger(__name__)

WATCHABLE = (SourceKind.VCENTER, SourceKind.ESXI)


class SourceWatcher(threading.Thread):
    def __init__(self, source_id: int, *, factory: Callable[[Endpoint], Connector] = connector_for) -> None:
        super().__init__(name=f"watch-source-{source_id}", daemon=True)
        self.source_id = source_id
        self.factory = factory
        self.stop_event = threading.Event()
        self.changes_applied = 0

    def stop(self) -> None:
        self.stop_event.set()

    def _on_change(self, changes: list[Change]) -> None:
        close_old_connections()
        source = Source.objects.select_related("credential").get(pk=self.source_id)
        apply_changes(source, changes)
        self.changes_applied += len(changes)

    def run(self) -> None:
        delay = 2.0
        while not self.stop_event.is_set():
            try:
                close_old_connections()
                source = Source.objects.select_related("credential").get(pk=self.source_id)
                connector = self.factory(source.endpoint(timeout=30.0))
                delay = 2.0
                connector.watch(self._on_change, self.stop_event)
            except Source.DoesNotExist:
                return
            except ConnectorError as error:
                logger.warning(
                    "watch on source %s lost: %s; retrying in %.0f s", self.source_id, error, delay
                )
            except Exception:
                logger.exception("watch on source %s failed; retrying in %.0f s", self.source_id, delay)
            finally:
                close_old_connections()
            self.stop_event.wait(delay)
            delay = min(delay * 2, 60.0)


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
