"""Channels' in-memory layer, made safe for publishers on other threads (the embedded Celery workers).

The stock InMemoryChannelLayer keeps one asyncio.Queue per channel and fills it with put_nowait() from whatever
thread calls send(). asyncio queues are not thread-safe: a put from a worker thread (which runs its own event
loop under async_to_sync) does not wake the server's loop, so the event sits in the queue until something else
happens to wake it — live progress would stall. This layer remembers which loop receives on each channel and
hands sends from other loops to it with run_coroutine_threadsafe. Production uses channels-redis instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import InMemoryChannelLayer


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receiving_loops: dict[str, asyncio.AbstractEventLoop] = {}

    async def receive(self, channel: str) -> dict[str, Any]:
        self._receiving_loops[channel] = asyncio.get_running_loop()
        return await super().receive(channel)  # type: ignore[no-any-return]

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        owner = self._receiving_loops.get(channel)
        if (
            owner is None
            or owner is asyncio.get_running_loop()
            or owner.is_closed()
            or not owner.is_running()
        ):
            await super().send(channel, message)
            return
        # Run the put on the receiver's loop: that wakes its waiting get() at once, and ChannelFull (raised
        # there) still reaches this caller.
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(super().send(channel, message), owner))

    async def group_discard(self, group: str, channel: str) -> None:
        await super().group_discard(group, channel)
        if not any(channel in members for members in self.groups.values()):
            self._receiving_loops.pop(channel, None)

    async def flush(self) -> None:
        await super().flush()
        self._receiving_loops.clear()
