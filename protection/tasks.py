"""Protection tasks: thin adapters around protection services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="protection.check_unprotected")
def check_unprotected() -> None:
    """Alert on machines still without a policy after the grace period."""
    from protection.services import check_unprotected as check

    check()


@shared_task(name="protection.run_backup", acks_late=True)
def run_backup(run_id: int) -> None:
    """Run one queued backup (claimed with a conditional update: a second delivery does nothing)."""
    from protection.backup import run_backup as run

    run(run_id)
