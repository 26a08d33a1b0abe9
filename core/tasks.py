"""Core Celery tasks."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="core.ping", ignore_result=False)
def ping(value: str) -> str:
    """Echo: lets a health check and the tests prove that a worker consumes the queue."""
    return value
