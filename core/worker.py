"""Celery worker threads inside the web process, for the embedded install (in-memory transport).

Production runs `celery -A config worker` on proxies instead; nothing here is used then.
"""

from __future__ import annotations

import logging
import threading

from celery.worker import WorkController

from config.celery import app

logger = logging.getLogger(__name__)


class EmbeddedWorker:
    """A Celery WorkController with a thread pool, running in a daemon thread of this process."""

    def __init__(self, *, concurrency: int, queues: list[str] | None = None) -> None:
        # WorkController, not app.Worker: the latter installs signal handlers, which only the main thread may.
        self.controller = WorkController(
            app=app,
            pool_cls="threads",
            concurrency=concurrency,
            queues=queues,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            hostname=f"embedded@{threading.get_native_id()}",
            loglevel="INFO",
        )
        self.thread = threading.Thread(target=self._run, name="celery-embedded", daemon=True)

    def _run(self) -> None:
        try:
            self.controller.start()
        except Exception:
            logger.exception("embedded Celery worker stopped")

    def start(self) -> None:
        self.thread.start()
        logger.info("embedded Celery worker started with %d threads", self.controller.concurrency)

    def stop(self) -> None:
        self.controller.stop(in_sighandler=False)
        self.thread.join(timeout=10)
