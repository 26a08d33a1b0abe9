"""A bandwidth limit for disk reads: the average rate since the first read stays under bytes_per_second.

A slow limit means long waits (4 MiB at 1 Mbit/s is half a minute), so a wait is slept in short slices and
`check`, when given, is called between them: it raises to stop the read (a cancelled run stops within a slice,
not after the whole wait).
"""

from __future__ import annotations

import time
from collections.abc import Callable

SLICE_SECONDS = 0.25


class Throttle:
    def __init__(self, bytes_per_second: int | None, *, check: Callable[[], None] | None = None) -> None:
        self.bytes_per_second = bytes_per_second
        self.check = check
        self.clock, self.sleep = time.monotonic, time.sleep  # replaceable (tests freeze the clock)
        self.start = self.clock()
        self.bytes = 0

    def before_read(self, length: int) -> None:
        """Sleep before a read that would pass the limit; nothing without a limit."""
        if not self.bytes_per_second:
            return
        self.bytes += max(length, 0)
        until = self.start + self.bytes / self.bytes_per_second
        while (ahead := until - self.clock()) > 0:
            if self.check is not None:
                self.check()
            self.sleep(min(ahead, SLICE_SECONDS))
