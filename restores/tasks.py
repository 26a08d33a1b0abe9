"""Restore tasks: thin adapters around restores.services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="restores.run_restore", acks_late=True)
def run_restore(request_id: int) -> None:
    """Run one queued restore (claimed with a conditional update)."""
    from restores.services import run_restore as run

    run(request_id)
