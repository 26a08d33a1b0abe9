"""Use cases that change machine groups, machine facts set by people, and discovery sources."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from connectors.base import Endpoint
from core import audit
from core.choices import CredentialKind
from core.events import publish_machine_event
from core.models import Credential, User
from inventory.choices import HyperVTransport, SourceKind
from inventory.models import Machine, MachineGroup, Source

GROUP_AUDIT_FIELDS = (
    "name",
    "description",
    "members",
    "machines",
    "match_name",
    "match_folder",
    "match_tags",
)
MACHINE_AUDIT_FIELDS = ("owner", "jurisdiction", "groups")


@transaction.atomic
def create_machine_group(
    *,
    actor: User | None,
    name: str,
    description: str = "",
    members: Iterable[User] = (),
    machines: Iterable[Machine] = (),
    **rule: str,
) -> MachineGroup:
    """Create a scope: its members see its machines (chosen, or those its rule matches)."""
    unknown = set(rule) - set(GROUP_RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown group fields {sorted(unknown)}")
    group = MachineGroup.objects.create(
        name=name, description=description, **{k: v.strip() for k, v in rule.items()}
    )
    group.members.set(list(members))
    if group.by_rule:
        sync_group_rules(groups=[group])
    else:
        group.machines.set(list(machines))
    audit.record(
        "machine_group.create", actor=actor, target=group, after=audit.snapshot(group, GROUP_AUDIT_FIELDS)
    )
    return group


@transaction.atomic
def update_machine_group(
    *,
    actor: User | None,
    group: MachineGroup,
    name: str | None = None,
    description: str | None = None,
    members: Iterable[User] | None = None,
    machines: Iterable[Machine] | None = None,
    **rule: str,
) -> MachineGroup:
    """Rename a group or change who and what it holds (a rule group's machines follow its rule)."""
    before = audit.snapshot(group, GROUP_AUDIT_FIELDS)
    if name is not None:
        group.name = name
    if description is not None:
        group.description = description
    for field, value in rule.items():
        if field not in GROUP_RULE_FIELDS:
            raise TypeError(f"unknown group field {field}")
        setattr(group, field, value.strip())
    group.save()
    if members is not None:
        group.members.set(list(members))
    if group.by_rule:
        sync_group_rules(groups=[group])
    elif machines is not None:
        group.machines.set(list(machines))
    after = audit.snapshot(group, GROUP_AUDIT_FIELDS)
    audit.record("machine_group.update", actor=actor, target=group, before=before, after=after)
    return group


@transaction.atomic
def delete_machine_group(*, actor: User | None, group: MachineGroup) -> None:
    """Delete a scope; its machines stay, its members no longer see them through it."""
    audit.record(
        "machine_group.delete", actor=actor, target=group, before=audit.snapshot(group, GROUP_AUDIT_FIELDS)
    )
    group.delete()


@transaction.atomic
def update_machine(
    *,
    actor: User | None,
    machine: Machine,
    owner: str | None = None,
    jurisdiction: str | None = None,
    groups: Iterable[MachineGroup] | None = None,
) -> Machine:
    """Set the facts people own about a machine: its owner, jurisdiction and groups."""
    before = audit.snapshot(machine, MACHINE_AUDIT_FIELDS)
    if owner is not None:
        machine.owner = owner
    if jurisdiction is not None:
        machine.jurisdiction = jurisdiction
    machine.save()
    if groups is not None:
        machine.groups.set(list(groups))
    after = audit.snapshot(machine, MACHINE_AUDIT_FIELDS)
    audit.record("machine.update", actor=actor, target=machine, before=before, after=after)
    transaction.on_commit(lambda: publish_machine_event("machine.changed", machine, {"name": machine.name}))
    return machine


# --- sources -----------------------------------------------------------------------------------------------------
SOURCE_AUDIT_FIELDS = (
    "name",
    "kind",
    "address",
    "port",
    "credential",
    "verify_tls",
    "thumbprint",
    "options",
    "site",
    "jurisdiction",
    "enabled",
    "discovery_interval_minutes",
    "watch",
)
SOURCE_OPTIONS = {"transport": {t.value for t in HyperVTransport}, "https": {True, False}}


def clean_source_options(options: Any) -> dict[str, Any]:
    """Options a source accepts (Hyper-V: transport ntlm|kerberos|credssp|basic, https true|false)."""
    if not isinstance(options, dict):
        raise ValidationError("options must be an object")
    unknown = set(options) - set(SOURCE_OPTIONS)
    if unknown:
        raise ValidationError(f"unknown options: {', '.join(sorted(unknown))}")
    for key, value in options.items():
        if value not in SOURCE_OPTIONS[key]:
            allowed = ", ".join(sorted(str(v).lower() for v in SOURCE_OPTIONS[key]))
            raise ValidationError(f"{key} must be one of {allowed}")
    if options.get("transport") == HyperVTransport.BASIC and options.get("https") is False:
        raise ValidationError("basic authentication is only allowed over HTTPS")
    return dict(options)


def _credential_kind(kind: str) -> CredentialKind:
    return CredentialKind.HYPERV if kind == SourceKind.HYPERV else CredentialKind.VSPHERE


@transaction.atomic
def create_source(
    *,
    actor: User | None,
    name: str,
    kind: str,
    address: str,
    username: str = "",
    password: str = "",
    credential: Credential | None = None,
    **fields: Any,
) -> Source:
    """Add a vCenter, ESXi or Hyper-V source; a password given here becomes an encrypted credential."""
    from core.services import create_credential

    if credential is None:
        credential = create_credential(
            actor=actor,
            name=f"source {name}",
            kind=_credential_kind(kind),
            username=username,
            secret=password,
        )
    source = Source.objects.create(
        name=name, kind=kind, address=address, credential=credential, created_by=actor, **fields
    )
    audit.record(
        "source.create", actor=actor, target=source, after=audit.snapshot(source, SOURCE_AUDIT_FIELDS)
    )
    return source


@transaction.atomic
def update_source(
    *,
    actor: User | None,
    source: Source,
    username: str | None = None,
    password: str | None = None,
    **fields: Any,
) -> Source:
    """Change a source; a new password replaces the stored secret (an empty one keeps it)."""
    from core.services import update_credential

    before = audit.snapshot(source, SOURCE_AUDIT_FIELDS)
    for name, value in fields.items():
        if name not in SOURCE_AUDIT_FIELDS and name not in ("ca_certificate",):
            raise TypeError(f"unknown source field {name}")
        setattr(source, name, value)
    source.save()
    if username is not None or password:
        update_credential(
            actor=actor, credential=source.credential, username=username, secret=password or None
        )
    after = audit.snapshot(source, SOURCE_AUDIT_FIELDS)
    audit.record("source.update", actor=actor, target=source, before=before, after=after)
    return source


@transaction.atomic
def delete_source(*, actor: User | None, source: Source) -> None:
    """Remove a source. Its machines stay (with their history and recovery points), no longer discovered."""
    audit.record(
        "source.delete", actor=actor, target=source, before=audit.snapshot(source, SOURCE_AUDIT_FIELDS)
    )
    source.delete()


def insecure_agents_allowed() -> bool:
    """Agents may talk plain HTTP only where the console itself is not served over TLS (embedded, tests)."""
    from django.conf import settings

    return not settings.TLS


def endpoint_for_form(fields: dict[str, Any], *, instance: Source | None) -> Endpoint:
    """The endpoint a source form describes, before it is saved (an edit without a new password keeps the stored
    one). Raises OutboundDenied for a denied address, like a saved source."""
    from django.conf import settings

    from connectors import outbound

    outbound.check(fields["address"], settings.BULWARK_OUTBOUND_NETWORKS)
    secret = fields.get("password") or (instance.credential.reveal() if instance is not None else "")
    kind = SourceKind(fields.get("kind") or (instance.kind if instance else SourceKind.VCENTER))
    return Endpoint(
        kind=kind.platform,
        address=fields["address"],
        port=fields.get("port"),
        username=fields.get("username") or (instance.credential.username if instance else ""),
        secret=secret,
        verify_tls=bool(fields.get("verify_tls")),
        ca_pem=fields.get("ca_certificate") or "",
        thumbprint=fields.get("thumbprint") or "",
        timeout=15.0,
        options=dict(fields.get("options") or {}),
    )


GROUP_RULE_FIELDS = ("match_name", "match_folder", "match_tags")


def group_matches(group: MachineGroup, machine: Machine) -> bool:
    """Whether a machine meets every criterion of a rule group (the protection rules' matching)."""
    from protection.models import ProtectionRule
    from protection.rules import criteria_of

    probe = ProtectionRule(**{field: getattr(group, field) for field in GROUP_RULE_FIELDS})
    checks = criteria_of(probe, machine)
    return bool(checks) and all(check.matched for check in checks)


def sync_group_rules(
    *, machines: Iterable[Machine] | None = None, groups: Iterable[MachineGroup] | None = None
) -> int:
    """Bring rule groups in line with their rules: for the given machines (a discovery's), or for every present
    machine of the given groups. Returns how many memberships changed."""
    rule_groups = [g for g in (groups if groups is not None else MachineGroup.objects.all()) if g.by_rule]
    if not rule_groups:
        return 0
    candidates = list(machines) if machines is not None else list(Machine.objects.present())
    through = MachineGroup.machines.through
    changed = 0
    for group in rule_groups:
        wanted = {m.pk for m in candidates if m.gone_since is None and group_matches(group, m)}
        scope = {m.pk for m in candidates}
        have = set(
            through.objects.filter(machinegroup=group, machine_id__in=scope).values_list(
                "machine_id", flat=True
            )
        )
        if wanted - have:
            group.machines.add(*(wanted - have))
        if have - wanted:
            group.machines.remove(*(have - wanted))
        changed += len(wanted ^ have)
    return changed
