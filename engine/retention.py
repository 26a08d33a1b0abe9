"""GFS retention: which snapshots to keep, and why (the prune simulator shows exactly this).

Like restic's forget policy: per machine, walk snapshots newest first; "last N" keeps the N newest; each
period rule (hourly, daily, weekly, monthly, yearly) keeps the newest snapshot of each of the N most recent
periods that have one. A snapshot kept by any rule is kept; its reasons list every rule that keeps it.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine.repository import Snapshot


@dataclass(frozen=True)
class RetentionSpec:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self) -> None:
        for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            if getattr(self, name) < 0:
                raise ValueError(f"retention {name} must not be negative")

    @property
    def keeps_nothing(self) -> bool:
        return not any((self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly))


@dataclass
class Decision:
    snapshot: Snapshot
    keep: bool = False
    reasons: list[str] = field(default_factory=list)


PERIODS: list[tuple[str, Callable[[datetime.datetime], str]]] = [
    ("hourly", lambda t: t.strftime("%Y-%m-%d %H:00")),
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("monthly", lambda t: t.strftime("%Y-%m")),
    ("yearly", lambda t: t.strftime("%Y")),
]


def plan_retention(snapshots: Iterable[Snapshot], spec: RetentionSpec) -> list[Decision]:
    """Decide for every snapshot, per machine. An empty spec is refused: it would delete everything."""
    if spec.keeps_nothing:
        raise ValueError("a retention that keeps nothing would forget every snapshot; give at least one rule")
    by_machine: dict[str, list[Snapshot]] = defaultdict(list)
    for snapshot in snapshots:
        by_machine[snapshot.machine].append(snapshot)
    decisions: list[Decision] = []
    for machine_snapshots in by_machine.values():
        ordered = sorted(machine_snapshots, key=lambda s: s.taken_at, reverse=True)
        mine = [Decision(snapshot) for snapshot in ordered]
        for number, decision in enumerate(mine[: spec.last]):
            decision.keep = True
            decision.reasons.append(f"last {number + 1} of {spec.last}")
        for name, period_of in PERIODS:
            wanted = getattr(spec, name)
            seen: set[str] = set()
            for decision in mine:
                if len(seen) >= wanted:
                    break
                period = period_of(decision.snapshot.taken_at)
                if period in seen:
                    continue
                seen.add(period)
                decision.keep = True
                decision.reasons.append(f"{name} {period}")
        decisions.extend(mine)
    return decisions
