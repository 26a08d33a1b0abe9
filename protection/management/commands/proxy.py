"""Run this host as a backup proxy: a Celery worker on its own queue (proxy.<name>), registered and heartbeating."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from django.utils import timezone

from protection.models import Proxy

HEARTBEAT_SECONDS = 20


class Command(BaseCommand):
    help = "Serve backups as a proxy: consume the proxy's own queue, at most --streams runs at once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--site", default="")
        parser.add_argument("--jurisdiction", default="")
        parser.add_argument("--streams", type=int, default=4)

    def handle(
        self, *args: Any, name: str, site: str, jurisdiction: str, streams: int, **options: Any
    ) -> None:
        from config.celery import app

        queue = f"proxy.{name}"
        Proxy.objects.update_or_create(
            name=name,
            defaults={
                "queue": queue,
                "site": site,
                "jurisdiction": jurisdiction,
                "max_streams": streams,
                "last_seen": timezone.now(),
            },
        )
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                close_old_connections()
                Proxy.objects.filter(name=name).update(last_seen=timezone.now())

        threading.Thread(target=heartbeat, name="proxy-heartbeat", daemon=True).start()
        self.stdout.write(f"proxy {name} serving {queue} with {streams} streams")
        try:
            app.Worker(
                queues=[queue], hostname=f"{name}@%h", concurrency=streams, pool="threads", loglevel="INFO"
            ).start()
        finally:
            stop.set()
