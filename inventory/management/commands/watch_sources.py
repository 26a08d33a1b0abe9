"""Follow every vSphere source live (production runs this as its own process; `serve` embeds it)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from inventory.watch import WatchManager


class Command(BaseCommand):
    help = "Watch vSphere sources with WaitForUpdatesEx and apply changes (new, cloned, moved VMs) at once."

    def handle(self, *args: Any, **options: Any) -> None:
        manager = WatchManager()
        done = threading.Event()

        def stop(*_: object) -> None:
            manager.stop()
            done.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        manager.start()
        self.stdout.write("watching sources; Ctrl-C stops")
        done.wait()
        manager.join(timeout=10)
