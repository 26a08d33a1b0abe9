"""Restore rules: what a help-desk operator may restore from a machine, by the rules of the machine's groups.

A machine in several groups with rules gets the strictest of them all (the intersection of targets and
extensions, the smallest cap, approval if any group demands it): the owners of every group it is in are heard.
Admins are not bound by rules. Without any rule, everything the role allows is allowed.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from core.choices import Role
from core.models import User
from inventory.models import Machine
from restores.models import RestoreRule, RestoreTarget


@dataclass(frozen=True)
class Limits:
    targets: frozenset[str] = frozenset(RestoreTarget.values)
    extensions: frozenset[str] | None = None  # None: any
    max_bytes: int | None = None
    approval: bool = False
    groups: tuple[str, ...] = field(default=())  # whose rules these are

    def describe(self) -> list[str]:
        """For the wizard: what the rules allow, in words."""
        said = [
            "Targets: "
            + (
                ", ".join(RestoreTarget(t).label.lower() for t in RestoreTarget.values if t in self.targets)
                or "none"
            )
        ]
        if self.extensions is not None:
            said.append("File types: " + (", ".join(sorted(self.extensions)) or "none"))
        if self.max_bytes is not None:
            said.append(f"At most {self.max_bytes:,} bytes per restore")
        if self.approval:
            said.append("An admin approves each restore before it runs")
        return said


def limits_for(user: User, machine: Machine) -> Limits:
    if user.role == Role.ADMIN:
        return Limits()
    rules = list(RestoreRule.objects.filter(group__machines=machine).select_related("group"))
    if not rules:
        return Limits()
    targets = set(RestoreTarget.values)
    extensions: set[str] | None = None
    caps = [rule.max_bytes for rule in rules if rule.max_bytes is not None]
    for rule in rules:
        allowed = {
            RestoreTarget.IN_PLACE: rule.allow_in_place,
            RestoreTarget.OTHER_FOLDER: rule.allow_other_folder,
            RestoreTarget.DOWNLOAD: rule.allow_download,
            RestoreTarget.SMB: rule.allow_smb,
        }
        targets &= {target for target, yes in allowed.items() if yes}
        if rule.extension_list:
            listed = set(rule.extension_list)
            extensions = listed if extensions is None else extensions & listed
    return Limits(
        targets=frozenset(targets),
        extensions=frozenset(extensions) if extensions is not None else None,
        max_bytes=min(caps) if caps else None,
        approval=any(rule.requires_approval for rule in rules),
        groups=tuple(rule.group.name for rule in rules),
    )


def extension_of(path: str) -> str:
    _, dot, extension = posixpath.basename(path).rpartition(".")
    return extension.lower() if dot and _ else ""
