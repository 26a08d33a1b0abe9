"""Catalog tasks: thin adapters around catalog.indexer."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="catalog.catalog_point", acks_late=True)
def catalog_point(point_id: int) -> None:
    """Catalog one point (claimed with a conditional update: a second delivery does nothing)."""
    from catalog.indexer import catalog_point as run
    from catalog.models import RecoveryPoint

    point = RecoveryPoint.objects.filter(pk=point_id).select_related("repository__passphrase").first()
    if point is not None:
        run(point)


@shared_task(name="catalog.catalog_pending")
def catalog_pending() -> None:
    """Points whose catalog never started (a lost message) or whose walker's worker died: catalogued now."""
    from catalog.indexer import catalog_point as run
    from catalog.indexer import points_to_catalog

    for point in points_to_catalog():
        run(point)
