"""Protection tasks: thin adapters around protection services."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="protection.check_unprotected")
def check_unprotected() -> None:
    """Alert on machines still without a policy after the grace period."""
    from protection.services import check_unprotected as check

    check()


@shared_task(name="protection.run_backup", acks_late=True, bind=True)
def run_backup(self, run_id: int) -> None:  # type: ignore[no-untyped-def]
    """Run one queued backup (claimed with a conditional update: a second delivery does nothing)."""
    from protection.backup import run_backup as run

    run(run_id, worker=self.request.hostname or "")


@shared_task(name="protection.schedule_due")
def schedule_due() -> None:
    """Queue the backups whose policy interval (or retry back-off) has passed."""
    from protection.backup import reap_stale_runs
    from protection.dispatch import dispatch
    from protection.schedule import schedule_due as schedule

    reap_stale_runs()
    schedule()
    dispatch()


@shared_task(name="protection.check_rpo")
def check_rpo() -> None:
    """Alert on protected machines whose newest recovery point is older than their RPO."""
    from protection.schedule import check_proxies, check_repositories
    from protection.schedule import check_rpo as check

    check_repositories()
    check()
    check_proxies()


@shared_task(name="protection.prune_repositories")
def prune_repositories() -> None:
    """Reclaim the space of snapshots retention forgot, repository by repository."""
    from catalog.models import Repository
    from protection.retention import prune_repository

    for repository in Repository.objects.all():
        prune_repository(repository)
