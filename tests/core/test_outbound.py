"""BULWARK_OUTBOUND_DENY: a denied target is refused before any packet, with one answer whatever listens there;
a repository that cannot be created leaves nothing behind and can be sent again."""

from __future__ import annotations

import pytest
from django.test import Client

from catalog.models import Repository
from connectors.outbound import OutboundDenied, check, parse_networks
from core.models import Credential
from inventory.choices import DiscoveryState, DiscoveryTrigger
from inventory.discovery import run_discovery
from inventory.models import DiscoveryRun
from inventory.services import create_source
from tests.conftest import Estate
from tests.peers import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def deny_loopback(settings):  # type: ignore[no-untyped-def]
    settings.BULWARK_OUTBOUND_NETWORKS = parse_networks(["127.0.0.0/8", "::1/128", "169.254.0.0/16"])


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1", "localhost", "https://127.0.0.1:9000/bucket", "[::1]", "169.254.169.254", "127.0.0.1:443"],
)
def test_denied_targets_are_refused_however_written(target: str) -> None:
    with pytest.raises(OutboundDenied, match="outbound policy"):
        check(target, parse_networks(["127.0.0.0/8", "::1/128", "169.254.0.0/16"]))


def test_a_bad_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8'"):
        parse_networks(["10.0.0.300/8"])


def test_a_denied_source_fails_alike_whether_a_port_is_open_or_closed(
    estate: Estate, deny_loopback, settings
) -> None:  # type: ignore[no-untyped-def]
    import socket

    listening = socket.create_server(("127.0.0.1", 0))
    errors = []
    try:
        settings.BULWARK_OUTBOUND_NETWORKS = ()  # saved while allowed, denied afterwards
        sources = [
            create_source(
                actor=None,
                name=f"s{port}",
                kind="vcenter",
                address="127.0.0.1",
                port=port,
                username="u",
                password="p",
            )
            for port in (listening.getsockname()[1], free_port())
        ]
        settings.BULWARK_OUTBOUND_NETWORKS = parse_networks(["127.0.0.0/8"])
        for source in sources:
            run = run_discovery(
                DiscoveryRun.objects.create(source=source, trigger=DiscoveryTrigger.MANUAL).pk
            )
            assert run.state == DiscoveryState.FAILED and run.error_code == "denied"
            errors.append(run.error)
    finally:
        listening.close()
    assert errors[0] == errors[1]  # nothing tells the open port from the closed one


def test_forms_and_api_refuse_a_denied_address(estate: Estate, deny_loopback, client_for) -> None:  # type: ignore[no-untyped-def]
    answer = client_for("admin").post(
        "/api/sources/",
        {"name": "inner", "kind": "vcenter", "address": "127.0.0.1", "username": "u", "password": "p"},
        content_type="application/json",
    )
    assert answer.status_code == 400 and "outbound policy" in answer.json()["address"][0]
    page = client_for("admin").post(
        "/repositories/",
        {
            "name": "meta",
            "kind": "s3",
            "path": "bucket/x",
            "endpoint": "http://169.254.169.254/",
            "access_key": "a",
            "secret_key": "b",
            "tier": "primary",
        },
    )
    assert "outbound policy" in page.content.decode()


def test_a_repository_that_cannot_be_created_leaves_nothing_and_can_be_sent_again(
    estate: Estate, client_for
) -> None:  # type: ignore[no-untyped-def]
    form = {
        "name": "objects",
        "kind": "s3",
        "path": "bucket/bulwark",
        "endpoint": f"http://127.0.0.1:{free_port()}",  # nothing listens: the endpoint refuses
        "access_key": "key",
        "secret_key": "secret",
        "tier": "primary",
        "immutable_days": 0,
    }
    client: Client = client_for("admin")
    for _ in range(2):
        page = client.post("/repositories/", form)
        assert page.status_code == 200
        assert "could not be created there" in page.content.decode()
    assert not Repository.objects.exists()
    assert not Credential.objects.filter(kind__in=["s3", "repository"]).exists()
