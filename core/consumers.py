"""The live event stream at /ws/events/: authorizes once per subscription and relays."""

from __future__ import annotations

from collections import deque
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core import events

# WebSocket close code for "not signed in" (4000-4999 are free for applications).
CLOSE_UNAUTHENTICATED = 4401


@database_sync_to_async
def _groups_for(user: Any) -> list[str]:
    return events.groups_for(user)


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
        for group in await _groups_for(user):
            await self._join(group)
        await self.accept()
        await self.send_json({"type": "welcome", "user": user.get_username(), "role": user.role})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join(self, group: str) -> None:
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)

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
