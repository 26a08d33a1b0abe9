"""/ws/events/ joins only the groups its user may see, on the in-memory layer and on channels-redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

from config.asgi import application
from core.models import User
from inventory.services import update_machine
from tests.conftest import Estate
from tests.peers import port_open, require_peer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["memory", "redis"])
def layer(request: pytest.FixtureRequest, settings: Any) -> Iterator[str]:
    if request.param == "redis":
        url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        parsed = urlparse(url)
        require_peer(
            port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379), f"Redis at {url} is not reachable"
        )
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                # A prefix of its own per test: parallel runs and leftovers never cross.
                "CONFIG": {"hosts": [url], "prefix": f"bulwark-test-{uuid.uuid4().hex[:8]}"},
            }
        }
    else:
        settings.CHANNEL_LAYERS = {
            "default": {"BACKEND": "core.channel_layer.ThreadSafeInMemoryChannelLayer"}
        }
    channel_layers.backends.clear()
    yield request.param
    channel_layers.backends.clear()


async def connect_session(user: User) -> tuple[WebsocketCommunicator, Client]:
    """A socket signed in with a session of its own, and the client holding that session."""
    client = Client()
    await sync_to_async(client.force_login)(user)
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/events/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    welcome = await communicator.receive_json_from(timeout=5)
    assert welcome["type"] == "welcome" and welcome["user"] == user.username
    return communicator, client


async def connect(user: User) -> WebsocketCommunicator:
    return (await connect_session(user))[0]


async def drain(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    messages = []
    while not await communicator.receive_nothing(timeout=0.5):
        messages.append(await communicator.receive_json_from())
    return messages


async def test_each_role_receives_only_events_it_may_see(estate: Estate, layer: str) -> None:
    admin, helpdesk, auditor = (
        await connect(estate.admin),
        await connect(estate.helpdesk),
        await connect(estate.auditor),
    )
    outsider = await connect(estate.outsider)

    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.research_vm, owner="Research")
    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.finance_vm, owner="Finance")

    admin_seen = await drain(admin)
    assert [(m["type"], m["data"].get("name")) for m in admin_seen if m["type"] == "machine.changed"] == [
        ("machine.changed", "lab-gpu-07"),
        ("machine.changed", "fin-db-01"),
    ]
    audited = [m["data"]["action"] for m in admin_seen if m["type"] == "audit.recorded"]
    assert (
        audited == ["auth.login"] * 3 + ["machine.update"] * 2
    )  # the later sockets' sign-ins, then the edits
    auditor_seen = await drain(auditor)
    assert {m["type"] for m in auditor_seen} == {"machine.changed", "audit.recorded"}

    helpdesk_seen = await drain(helpdesk)
    assert [(m["type"], m["data"]["name"]) for m in helpdesk_seen] == [("machine.changed", "fin-db-01")]
    assert await drain(outsider) == []
    for communicator in (admin, helpdesk, auditor, outsider):
        await communicator.disconnect()


async def test_subscribing_to_a_machine_is_authorized(estate: Estate, layer: str) -> None:
    socket = await connect(estate.outsider)
    await socket.send_json_to({"action": "subscribe", "machine": estate.research_vm.pk})
    assert (await socket.receive_json_from())["code"] == "not_found"
    await socket.send_json_to({"action": "subscribe", "machine": "1; DROP TABLE"})
    assert (await socket.receive_json_from())["code"] == "invalid"
    await socket.send_json_to({"action": "teleport"})
    assert (await socket.receive_json_from())["code"] == "unknown_action"
    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.research_vm, owner="x")
    assert await drain(socket) == []

    # Once added to the machine's group, a subscription is granted and events flow.
    await sync_to_async(estate.research.members.add)(estate.outsider)
    await socket.send_json_to({"action": "subscribe", "machine": estate.research_vm.pk})
    assert await socket.receive_json_from() == {"type": "subscribed", "machine": estate.research_vm.pk}
    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.research_vm, owner="y")
    assert [m["data"]["name"] for m in await drain(socket)] == ["lab-gpu-07"]
    await socket.disconnect()


async def test_an_event_reaching_a_socket_through_two_groups_arrives_once(estate: Estate, layer: str) -> None:
    await sync_to_async(estate.research.members.add)(estate.helpdesk)
    await sync_to_async(estate.finance_vm.groups.add)(estate.research)
    socket = await connect(estate.helpdesk)
    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.finance_vm, owner="z")
    assert len(await drain(socket)) == 1
    await socket.disconnect()


async def test_foreign_origins_and_strangers_are_refused(estate: Estate, layer: str) -> None:
    client = Client()
    await sync_to_async(client.force_login)(estate.admin)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    evil = WebsocketCommunicator(
        application, "/ws/events/", headers=[(b"origin", b"https://evil.example"), cookie]
    )
    assert (await evil.connect())[0] is False
    stranger = WebsocketCommunicator(application, "/ws/events/", headers=[(b"origin", b"http://localhost")])
    assert (await stranger.connect())[0] is False


async def test_events_published_from_a_worker_thread_reach_sockets(estate: Estate, layer: str) -> None:
    """Embedded Celery workers are plain threads with no event loop of their own; their events must arrive
    while the server's loop sleeps with nothing else to wake it."""
    import threading
    import time

    from core.events import ALL_MACHINES, publish

    socket = await connect(estate.admin)

    def work() -> None:
        time.sleep(0.3)  # the loop below is already idle, waiting for the socket
        publish("run.progress", {"done": 42}, groups=[ALL_MACHINES])

    threading.Thread(target=work, daemon=True).start()
    message = await socket.receive_json_from(timeout=5)
    assert (message["type"], message["data"]) == ("run.progress", {"done": 42})
    await socket.disconnect()


async def test_discovery_and_alert_events_reach_admins_and_the_machines_scope(
    layer: str, estate: Estate
) -> None:
    """Discovery progress is for admins only; an unprotected alert reaches whoever sees the machine."""
    from core.events import ADMINS, publish
    from protection.choices import AlertKind
    from protection.services import raise_alert

    admin, helpdesk, outsider = (
        await connect(estate.admin),
        await connect(estate.helpdesk),
        await connect(estate.outsider),
    )
    await sync_to_async(publish)(
        "discovery.state", {"run": 1, "source": 1, "state": "succeeded"}, groups=[ADMINS]
    )

    def alert() -> None:
        raise_alert(
            kind=AlertKind.UNPROTECTED, key="t", message="fin-db-01 is unprotected", machine=estate.finance_vm
        )

    await sync_to_async(alert)()
    admin_events = [m["type"] for m in await drain(admin) if m["type"] != "audit.recorded"]
    helpdesk_events = [m["type"] for m in await drain(helpdesk)]
    outsider_events = [m["type"] for m in await drain(outsider)]
    assert admin_events == ["discovery.state", "alert.raised"]
    assert helpdesk_events == ["alert.raised"]
    assert outsider_events == []
    for communicator in (admin, helpdesk, outsider):
        await communicator.disconnect()


# --- rights that change while a socket is open --------------------------------------------------------------------
async def assert_closed(communicator: WebsocketCommunicator) -> None:
    """The socket says why, then closes as signed out (within a few seconds)."""
    said = await communicator.receive_json_from(timeout=5)
    assert said["type"] == "signed_out"
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_signing_out_closes_that_sessions_sockets_and_no_other(estate: Estate, layer: str) -> None:
    signed_out, client = await connect_session(estate.helpdesk)
    other, _ = await connect_session(estate.helpdesk)
    await sync_to_async(client.logout)()
    await assert_closed(signed_out)
    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.finance_vm, owner="after")
    assert [m["type"] for m in await drain(other)] == ["machine.changed"]
    await other.disconnect()


@pytest.mark.parametrize("change", ["deactivate", "password", "delete"])
async def test_a_change_of_the_users_rights_closes_the_socket(
    estate: Estate, layer: str, change: str
) -> None:
    socket, _ = await connect_session(estate.helpdesk)

    def apply() -> None:
        user = User.objects.get(pk=estate.helpdesk.pk)
        if change == "deactivate":
            user.is_active = False
            user.save()
        elif change == "password":
            user.set_password("a-new-password-42")
            user.save()
        else:
            user.delete()

    await sync_to_async(apply)()
    await assert_closed(socket)


async def test_leaving_a_group_stops_its_machines_events_at_once(estate: Estate, layer: str) -> None:
    socket, _ = await connect_session(estate.helpdesk)
    await socket.send_json_to({"action": "subscribe", "machine": estate.finance_vm.pk})
    assert (await socket.receive_json_from(timeout=5))["type"] == "subscribed"

    await sync_to_async(estate.finance.members.remove)(estate.helpdesk)
    await drain(socket)  # the re-check happens as the notice arrives
    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.finance_vm, owner="secret")
    assert await drain(socket) == []
    await socket.disconnect()


async def test_a_machine_leaving_the_scope_stops_its_subscription(estate: Estate, layer: str) -> None:
    socket, _ = await connect_session(estate.helpdesk)
    await socket.send_json_to({"action": "subscribe", "machine": estate.finance_vm.pk})
    assert (await socket.receive_json_from(timeout=5))["type"] == "subscribed"

    await sync_to_async(estate.finance_vm.groups.remove)(estate.finance)
    await drain(socket)
    await sync_to_async(update_machine)(actor=estate.admin, machine=estate.finance_vm, owner="moved")
    assert await drain(socket) == []
    await socket.disconnect()


async def test_a_change_no_notice_announced_is_caught_by_the_periodic_recheck(
    estate: Estate, layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import consumers

    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.5)
    socket, _ = await connect_session(estate.helpdesk)
    # A bulk update sends no signal, as a change made straight in the database would not.
    await sync_to_async(User.objects.filter(pk=estate.helpdesk.pk).update)(is_active=False)
    await assert_closed(socket)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"bytes_data": b"\x00\xff binary"}, 1003),
        ({"text_data": "{not json"}, 1007),
        ({"text_data": "[" * 100_000 + "]" * 100_000}, 1009),
        ({"text_data": "[" * 20_000 + "]" * 20_000}, 1007),
    ],
)
async def test_bad_frames_close_the_socket_with_the_right_code(
    estate: Estate, layer: str, frame: dict[str, Any], code: int
) -> None:
    socket = await connect(estate.helpdesk)
    await socket.send_to(**frame)
    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": code}
