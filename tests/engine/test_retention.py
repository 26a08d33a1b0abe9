"""GFS retention keeps the right snapshots and says why."""

from __future__ import annotations

import datetime

import pytest

from engine.repository import Snapshot
from engine.retention import RetentionSpec, plan_retention


def snapshot(machine: str, when: datetime.datetime) -> Snapshot:
    return Snapshot(
        id=f"{machine}-{when:%Y%m%d%H%M}",
        kind="image",
        time=when.isoformat(),
        hostname="h",
        machine=machine,
        tags=[],
        parent=None,
    )


def hourly_for(days: int, machine: str = "vm") -> list[Snapshot]:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return [snapshot(machine, start + datetime.timedelta(hours=h)) for h in range(days * 24)]


def kept(decisions) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(d.snapshot.id for d in decisions if d.keep)


def test_last_and_daily() -> None:
    decisions = plan_retention(hourly_for(10), RetentionSpec(last=3, daily=7))
    ids = kept(decisions)
    # The 3 newest, plus the newest of each of the 7 most recent days (the newest day's is already kept).
    assert len(ids) == 3 + 6
    assert "vm-202601102300" in ids and "vm-202601042300" in ids and "vm-202601032300" not in ids
    newest = next(d for d in decisions if d.snapshot.id == "vm-202601102300")
    assert newest.reasons == ["last 1 of 3", "daily 2026-01-10"]


def test_weekly_monthly_yearly_over_two_years() -> None:
    start = datetime.datetime(2025, 1, 1, 2, tzinfo=datetime.UTC)
    snapshots = [snapshot("db", start + datetime.timedelta(days=d)) for d in range(730)]
    ids = kept(plan_retention(snapshots, RetentionSpec(daily=7, weekly=4, monthly=12, yearly=3)))
    assert "db-202612310200" in ids  # newest
    assert "db-202512310200" in ids  # yearly 2025 (its newest)
    assert "db-202601310200" in ids  # monthly 2026-01
    assert "db-202512300200" not in ids
    assert 7 <= len(ids) <= 7 + 4 + 12 + 2


def test_machines_are_judged_separately() -> None:
    decisions = plan_retention(hourly_for(2, "a") + hourly_for(2, "b"), RetentionSpec(last=1))
    assert kept(decisions) == ["a-202601022300", "b-202601022300"]


def test_an_empty_or_negative_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="keeps nothing"):
        plan_retention(hourly_for(1), RetentionSpec())
    with pytest.raises(ValueError, match="negative"):
        RetentionSpec(daily=-1)
