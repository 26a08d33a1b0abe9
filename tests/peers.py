"""Helpers for tests that use real peers (Redis, an S3 server, Chromium). Django-free: engine tests use them."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_peer(reachable: bool, reason: str) -> None:
    """Skip locally when a peer is missing; under CI=true a missing peer is an error, never a skip."""
    if reachable:
        return
    if IN_CI:
        pytest.fail(f"required test peer missing in CI: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
