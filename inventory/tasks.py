"""Inventory tasks: thin adapters around discovery and agent services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="inventory.discover")
def discover(run_id: int) -> None:
    """Run one queued discovery (a second delivery finds it claimed and does nothing)."""
    from inventory.discovery import run_discovery

    run_discovery(run_id)


@shared_task(name="inventory.discover_due")
def discover_due() -> None:
    """Queue the sources whose discovery interval has passed."""
    from inventory.discovery import queue_due_discoveries

    queue_due_discoveries()


@shared_task(name="inventory.check_agents")
def check_agents() -> None:
    """Mark agents whose heartbeats stopped as offline (and raise alerts)."""
    from inventory.agents import check_heartbeats

    check_heartbeats()
