"""How long operations report progress, without knowing who listens.

The engine and the connectors call step(); services pass in an implementation (Channels in the console, a
terminal bar in the command line, a recorder in tests).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def step(self, done: int, total: int | None, phase: str) -> None:
        """Report bytes (or items) done out of total (None when unknown) in the named phase."""


class NullProgress:
    """Reports nowhere; for callers that do not watch."""

    def step(self, done: int, total: int | None, phase: str) -> None:
        return None
