"""Connector fixtures: real peers (vcsim), no database."""

from __future__ import annotations

from connectors.base import Endpoint
from tests.peers import Vcsim


def endpoint_for(server: Vcsim, **changes: object) -> Endpoint:
    values: dict[str, object] = {
        "kind": "vsphere",
        "address": "127.0.0.1",
        "port": server.port,
        "username": server.username,
        "secret": server.password,
        "thumbprint": server.thumbprint(),
        "timeout": 10.0,
    }
    values.update(changes)
    return Endpoint(**values)  # type: ignore[arg-type]
