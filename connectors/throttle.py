"""A bandwidth limit for disk reads: the average rate since the first read stays under bytes_per_second."""

from __future__ import annotations

import time


class Throttle:
    def __init__(self, bytes_per_second: int | None) -> None:
        self.bytes_per_second = bytes_per_second
        self.clock, self.sleep = time.monotonic, time.sleep  # replaceable (tests freeze the clock)
        self.start = self.clock()
        self.bytes = 0

    def before_read(self, length: int) -> None:
        """Sleep before a read that would pass the limit; nothing without a limit."""
        if not self.bytes_per_second:
            return
        self.bytes += max(length, 0)
        ahead = self.bytes / self.bytes_per_second - (self.clock() - self.start)
        if ahead > 0:
            self.sleep(ahead)
