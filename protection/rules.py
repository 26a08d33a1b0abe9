"""Auto-protection rules, evaluated with a trace: which rule matched a machine, criterion by criterion, and why.

Pure functions over a machine and the ordered rules: no writes here (services.apply_rules does those), so the
same code answers "why is this machine protected, or not?" and a rule's dry run.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protection.choices import RuleAction

if TYPE_CHECKING:
    from inventory.models import Machine
    from protection.models import Policy, ProtectionRule


@dataclass(frozen=True)
class Criterion:
    name: str  # "name", "tags", ...
    wanted: str
    actual: str
    matched: bool


@dataclass
class RuleResult:
    rule: ProtectionRule
    matched: bool
    criteria: list[Criterion] = field(default_factory=list)
    note: str = ""


@dataclass
class Decision:
    """What the rules say about one machine (before any existing assignment is considered)."""

    policy: Policy | None
    rule: ProtectionRule | None  # the include rule that chose the policy
    excluded_by: ProtectionRule | None
    trace: list[RuleResult]

    @property
    def summary(self) -> str:
        if self.excluded_by is not None:
            return f"excluded by rule {self.excluded_by.name!r}"
        if self.rule is not None and self.policy is not None:
            return f"rule {self.rule.name!r} assigns policy {self.policy.name!r}"
        return "no rule matches"


def _alternatives(pattern: str) -> list[str]:
    return [part.strip().lower() for part in pattern.split(",") if part.strip()]


def _glob(pattern: str, value: str) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), alternative) for alternative in _alternatives(pattern))


def _folder(pattern: str, folder: str) -> bool:
    """A folder pattern matches the folder itself and everything below it ("/Prod" covers "/Prod/DB")."""
    folder = folder.lower().rstrip("/") or "/"
    for alternative in _alternatives(pattern):
        alternative = alternative.rstrip("/") or "/"
        if fnmatch.fnmatchcase(folder, alternative) or fnmatch.fnmatchcase(folder, alternative + "/*"):
            return True
        if alternative == "/":
            return True
    return False


def criteria_of(rule: ProtectionRule, machine: Machine) -> list[Criterion]:
    """Every criterion the rule sets, checked against the machine."""
    checks: list[Criterion] = []
    if rule.match_source_id is not None:
        checks.append(
            Criterion(
                "source",
                str(rule.match_source),
                str(machine.source) if machine.source_id else "(none)",
                machine.source_id == rule.match_source_id,
            )
        )
    if rule.match_platform:
        checks.append(
            Criterion(
                "platform", rule.match_platform, machine.platform, machine.platform == rule.match_platform
            )
        )
    if rule.match_name:
        checks.append(Criterion("name", rule.match_name, machine.name, _glob(rule.match_name, machine.name)))
    if rule.match_tags:
        wanted = _alternatives(rule.match_tags)
        tags = [str(tag) for tag in machine.tags or []]
        hit = any(_glob(pattern, tag) for pattern in wanted for tag in tags)
        checks.append(Criterion("tags", rule.match_tags, ", ".join(tags) or "(none)", hit))
    if rule.match_folder:
        checks.append(
            Criterion(
                "folder",
                rule.match_folder,
                machine.folder or "(none)",
                _folder(rule.match_folder, machine.folder),
            )
        )
    if rule.match_resource_pool:
        checks.append(
            Criterion(
                "resource pool",
                rule.match_resource_pool,
                machine.resource_pool or "(none)",
                _glob(rule.match_resource_pool, machine.resource_pool),
            )
        )
    if rule.match_host:
        hit = _glob(rule.match_host, machine.host) or _glob(rule.match_host, machine.cluster)
        where = " / ".join(part for part in (machine.cluster, machine.host) if part) or "(none)"
        checks.append(Criterion("host or cluster", rule.match_host, where, hit))
    if rule.match_guest_os:
        checks.append(
            Criterion(
                "guest OS",
                rule.match_guest_os,
                machine.guest_os or "(unknown)",
                _glob(rule.match_guest_os, machine.guest_os),
            )
        )
    return checks


def evaluate(machine: Machine, rules: list[ProtectionRule]) -> Decision:
    """Rules in position order. Disabled rules are listed in the trace but never match."""
    trace: list[RuleResult] = []
    chosen: ProtectionRule | None = None
    excluded_by: ProtectionRule | None = None
    for rule in sorted(rules, key=lambda r: r.position):
        checks = criteria_of(rule, machine)
        if not rule.enabled:
            trace.append(RuleResult(rule, False, checks, "disabled"))
            continue
        matched = all(check.matched for check in checks)
        note = ""
        if matched and rule.action == RuleAction.EXCLUDE:
            excluded_by = excluded_by or rule
            note = "excludes this machine (exclusions always win)"
        elif matched and chosen is None:
            chosen = rule
            note = f"assigns {rule.policy}"
        elif matched:
            note = f"also matches, but rule {chosen.name!r} comes first" if chosen else ""
        trace.append(RuleResult(rule, matched, checks, note))
    if excluded_by is not None:
        return Decision(None, None, excluded_by, trace)
    return Decision(chosen.policy if chosen else None, chosen, None, trace)
