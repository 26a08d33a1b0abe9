"""The live event stream at /ws/events/: authorizes on connect and on every subscription, and re-checks for as
long as the socket stays open.

A socket's rights are re-checked when its user's rights change (sign-out, deactivation, a password or role
change, group membership: see core/signals.py and inventory/signals.py) and, as a fallback for a change
notice lost with the channel layer, every RECHECK_SECONDS. A socket whose session no longer signs its user in
is closed; one whose scope narrowed leaves the groups and machines it may no longer see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from importlib import import_module
from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from core import events

# WebSocket close code for "not signed in" (4000-4999 are free for applications).
CLOSE_UNAUTHENTICATED = 4401
RECHECK_SECONDS = 30.0
CLOSE_UNSUPPORTED = 1003  # RFC 6455: a kind of data the endpoint does not accept
CLOSE_INVALID = 1007  # data inconsistent with the message type (not JSON)
CLOSE_TOO_BIG = 1009
MAX_FRAME = 64 * 1024


@database_sync_to_async
def _groups_for(user: Any) -> list[str]:
    return events.groups_for(user)


@database_sync_to_async
def _visible_machines(user: Any, machine_ids: list[int]) -> set[int]:
    from inventory.models import Machine

    return set(Machine.objects.visible_to(user).filter(pk__in=machine_ids).values_list("pk", flat=True))


@database_sync_to_async
def _fresh_session(session_key: str | None) -> Any:
    """The session as it is in the store now (a signed-out session loads empty)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    store.load()
    return store


@database_sync_to_async
def _may_see_machine(user: Any, machine_id: int) -> bool:
    from inventory.models import Machine

    return Machine.objects.visible_to(user).filter(pk=machine_id).exists()


class EventsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Joins only the groups the user may see; clients may add single machines with a subscribe message."""

    async def connect(self) -> None:
        self.joined: list[str] = []
        self.recent_ids: deque[str] = deque(maxlen=256)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            # Closing before accept rejects the handshake (HTTP 403): nothing is ever sent to strangers.
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        session = self.scope.get("session")
        self.session_key: str | None = getattr(session, "session_key", None)
        self.user_id: int = user.pk
        await self._join(events.user_channel(user.pk))
        for group in await _groups_for(user):
            await self._join(group)
        await self.accept()
        await self.send_json({"type": "welcome", "user": user.get_username(), "role": user.role})
        self.rechecker = asyncio.ensure_future(self._recheck_every(RECHECK_SECONDS))

    async def disconnect(self, code: int) -> None:
        rechecker = getattr(self, "rechecker", None)
        if rechecker is not None and rechecker is not asyncio.current_task():
            rechecker.cancel()
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined = []

    async def _recheck_every(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(seconds)
                await self._recheck()

    async def bulwark_access(self, message: dict[str, Any]) -> None:
        closing = message.get("closing_session")
        if closing and closing == self.session_key:
            await self._close_signed_out()
            return
        await self._recheck()

    async def _close_signed_out(self) -> None:
        await self.send_json({"type": "signed_out", "detail": "Your session ended; sign in again."})
        await self.disconnect(CLOSE_UNAUTHENTICATED)
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def _recheck(self) -> None:
        """Sign the session in again and keep only the groups and machines its user may see now."""
        if not self.joined:
            return  # closed already
        user = await get_user({"session": await _fresh_session(self.session_key)})
        if not user.is_authenticated or not user.is_active or user.pk != self.user_id:
            await self._close_signed_out()
            return
        self.scope["user"] = user
        allowed = {events.user_channel(user.pk), *await _groups_for(user)}
        prefix = events.machine_channel(0)[:-1]
        machines = {int(group[len(prefix) :]): group for group in self.joined if group.startswith(prefix)}
        allowed |= {machines[pk] for pk in await _visible_machines(user, list(machines))}
        for group in [group for group in self.joined if group not in allowed]:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.joined.remove(group)
        for group in sorted(allowed - set(self.joined)):
            await self._join(group)

    async def _join(self, group: str) -> None:
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Frames are small JSON objects; anything else closes the socket with the code RFC 6455 has for it."""
        if text_data is None:
            await self.close(code=CLOSE_UNSUPPORTED)  # binary frames: not a kind of data this socket takes
            return
        if len(text_data) > MAX_FRAME:
            await self.close(code=CLOSE_TOO_BIG)
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):  # malformed, or nested deeper than the parser goes
            await self.close(code=CLOSE_INVALID)
            return
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        action = content.get("action") if isinstance(content, dict) else None
        if action == "ping":
            await self.send_json({"type": "pong"})
        elif action == "subscribe":
            await self._subscribe(content)
        else:
            await self.send_json(
                {"type": "error", "code": "unknown_action", "detail": "use ping or subscribe"}
            )

    async def _subscribe(self, content: dict[str, Any]) -> None:
        machine_id = content.get("machine")
        if not isinstance(machine_id, int) or isinstance(machine_id, bool):
            await self.send_json(
                {"type": "error", "code": "invalid", "detail": "machine must be an integer id"}
            )
            return
        # Same answer for "does not exist" and "not yours": ids of other scopes are not revealed.
        if not await _may_see_machine(self.scope["user"], machine_id):
            await self.send_json({"type": "error", "code": "not_found", "detail": f"no machine {machine_id}"})
            return
        await self._join(events.machine_channel(machine_id))
        await self.send_json({"type": "subscribed", "machine": machine_id})

    async def bulwark_event(self, message: dict[str, Any]) -> None:
        # A machine in two of the user's groups is published to both; deliver it once.
        if message["id"] in self.recent_ids:
            return
        self.recent_ids.append(message["id"])
        await self.send_json({"type": message["event"], "id": message["id"], "data": message["data"]})
