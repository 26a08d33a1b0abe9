"""Protection tasks: thin adapters around protection services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="protection.check_unprotected")
def check_unprotected() -> None:
    """Alert on machines still without a policy after the grace period."""
    from protection.services import check_unprotected as check

    check()
