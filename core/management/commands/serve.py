"""Serve the console: pages, API and WebSockets through uvicorn, plus embedded Celery worker threads."""

from __future__ import annotations

from typing import Any

import uvicorn
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve Bulwark over ASGI; with the in-memory broker, also run Celery worker threads in-process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        # Pages name static files through the hashed manifest; without it every page fails. Collecting is
        # incremental (about a second when nothing changed), so serve always does it rather than rely on a
        # separate step.
        call_command("collectstatic", interactive=False, verbosity=0)
        worker = beat = watch = None
        if settings.BULWARK_EMBEDDED_WORKER:
            from celery.beat import EmbeddedService

            from config.celery import app
            from core.worker import EmbeddedWorker

            worker = EmbeddedWorker(concurrency=settings.BULWARK_EMBEDDED_WORKER_THREADS)
            worker.start()
            # Periodic discoveries and checks (production runs `celery -A config beat` instead).
            beat = EmbeddedService(app, thread=True)
            beat.start()
        if settings.BULWARK_EMBEDDED_WATCH:
            from inventory.watch import WatchManager

            watch = WatchManager()
            watch.start()
        self.stdout.write(f"Bulwark console at http://{host}:{port}/ (Ctrl+C stops it)")
        try:
            uvicorn.run(
                "config.asgi:application",
                host=host,
                port=port,
                lifespan="off",
                log_level=settings.LOG_LEVEL.lower(),
                # Only trust X-Forwarded-* when the operator says a proxy sets them.
                proxy_headers=bool(getattr(settings, "SECURE_PROXY_SSL_HEADER", None)),
            )
        finally:
            if watch is not None:
                watch.stop()
            if beat is not None:
                beat.stop()
            if worker is not None:
                worker.stop()
