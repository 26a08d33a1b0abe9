from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inventory.models import Source
from protection import services
from protection.choices import RuleAction
from protection.models import (
    POLICY_FIELDS,
    RULE_CRITERIA,
    RULE_FIELDS,
    Alert,
    BackupRun,
    CopyTarget,
    Policy,
    ProtectionRule,
    path_lines,
)
from protection.querysets import visible_entries
from protection.rules import Decision


def _or_invalid(clean: Callable[..., str], value: str, **options: Any) -> str:
    try:
        return clean(value, **options)
    except ValueError as error:
        raise serializers.ValidationError(str(error)) from None


# What a policy runs on the machines and where it stores them: admins' (and auditors') fields only.
ADMIN_POLICY_FIELDS = (
    "repository",
    "pre_script",
    "post_script",
    "include_paths",
    "exclude_patterns",
    "volumes",
)


def _sees_everything(context: dict[str, Any]) -> bool:
    request = context.get("request")
    return request is not None and getattr(request.user, "sees_all_machines", False)


@extend_schema_field(
    {
        "type": "string",
        "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
        "example": "22:00",
        "nullable": True,
        "description": "A wall-clock time of the console's time zone (HH:MM); the end may be earlier than the "
        "start (overnight). Empty: no window.",
    }
)
class WindowTimeField(serializers.TimeField):
    """HH:MM in and out: a backup window is a wall-clock time, with no time zone and no fractions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%H:%M", input_formats=["%H:%M", "%H:%M:%S"], **kwargs)


class PolicySerializer(serializers.ModelSerializer):
    window_start = WindowTimeField(required=False, allow_null=True)
    window_end = WindowTimeField(required=False, allow_null=True)
    machines = serializers.IntegerField(
        source="machine_count", read_only=True, help_text="Machines it protects, of those you may see."
    )

    class Meta:
        model = Policy
        fields = ["id", *POLICY_FIELDS, "machines", "created_at"]
        read_only_fields = ["created_at"]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        if not _sees_everything(self.context) and "request" in self.context:
            for name in ADMIN_POLICY_FIELDS:
                fields.pop(name, None)
        return fields

    def validate_schedule_cron(self, value: str) -> str:
        from protection.cron import normalise_cron

        return _or_invalid(normalise_cron, value)

    def validate_include_paths(self, value: str) -> str:
        return _or_invalid(path_lines, value, absolute=True)

    def validate_volumes(self, value: str) -> str:
        return _or_invalid(path_lines, value, absolute=True)

    def validate_exclude_patterns(self, value: str) -> str:
        return _or_invalid(path_lines, value, absolute=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        merged = {
            **(
                {f: getattr(self.instance, f) for f in ("mode", "include_paths", "volumes")}
                if self.instance
                else {}
            ),
            **attrs,
        }
        if merged.get("mode") == "agent" and not (merged.get("include_paths") or merged.get("volumes")):
            raise serializers.ValidationError({"include_paths": ["An agent policy needs paths or volumes."]})
        return attrs

    def create(self, validated: dict[str, Any]) -> Policy:
        actor = self.context["request"].user
        policy = services.create_policy(actor=actor, name=validated.pop("name"))
        policy = services.update_policy(actor=actor, policy=policy, **validated) if validated else policy
        policy.machine_count = 0  # type: ignore[attr-defined]  # the answer has every field of the schema
        return policy

    def update(self, instance: Policy, validated: dict[str, Any]) -> Policy:
        policy = services.update_policy(actor=self.context["request"].user, policy=instance, **validated)
        policy.machine_count = policy.assignments.count()  # type: ignore[attr-defined]  # admins: every machine
        return policy


class ProtectionRuleSerializer(serializers.ModelSerializer):
    position = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    match_source = serializers.PrimaryKeyRelatedField(
        queryset=Source.objects.all(), required=False, allow_null=True
    )

    class Meta:
        model = ProtectionRule
        fields = ["id", *RULE_FIELDS, "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        merged = {name: getattr(self.instance, name) for name in RULE_FIELDS} if self.instance else {}
        merged.update(data)
        action = merged.get("action") or RuleAction.INCLUDE
        if action == RuleAction.INCLUDE and merged.get("policy") is None:
            raise serializers.ValidationError({"policy": ["An include rule needs the policy it assigns."]})
        if action == RuleAction.EXCLUDE and merged.get("policy") is not None:
            raise serializers.ValidationError({"policy": ["An exclusion assigns no policy: leave it empty."]})
        criteria = [name for name in RULE_CRITERIA if merged.get(name)]
        if not criteria:
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        "Set at least one criterion (a rule matching everything is a policy default)."
                    ]
                }
            )
        return data

    def create(self, validated: dict[str, Any]) -> ProtectionRule:
        return services.create_rule(actor=self.context["request"].user, **validated)

    def update(self, instance: ProtectionRule, validated: dict[str, Any]) -> ProtectionRule:
        return services.update_rule(actor=self.context["request"].user, rule=instance, **validated)


class AlertEntrySerializer(serializers.Serializer):
    machine = serializers.IntegerField(source="machine_id")
    machine_name = serializers.CharField(source="machine.name")
    cause = serializers.CharField()
    since = serializers.DateTimeField()


class AlertSerializer(serializers.ModelSerializer):
    machine_name = serializers.CharField(source="machine.name", read_only=True, default=None, allow_null=True)
    machines = serializers.SerializerMethodField(
        help_text="The machines a grouped alert lists, of those you see."
    )
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "kind",
            "severity",
            "machine",
            "machine_name",
            "source",
            "message",
            "machines",
            "raised_at",
            "updated_at",
            "resolved_at",
            "acknowledged_at",
            "acknowledged_by",
        ]
        read_only_fields = fields

    @extend_schema_field(AlertEntrySerializer(many=True))
    def get_machines(self, alert: Alert) -> list[dict[str, Any]]:
        request = self.context.get("request")
        entries = visible_entries(alert, request.user if request is not None else None)
        return AlertEntrySerializer(entries[:1000], many=True).data  # type: ignore[return-value]


class AssignSerializer(serializers.Serializer):
    policy = serializers.PrimaryKeyRelatedField(queryset=Policy.objects.all(), allow_null=True)
    reason = serializers.CharField(max_length=400, required=False, allow_blank=True)


def decision_data(decision: Decision, assignment: Any, *, with_rules: bool) -> dict[str, Any]:
    """The answer to "why is this machine protected, or not?", rule by rule for those who may read the rules
    (admins, auditors); others learn the outcome and whether a rule or a person decided it, not the rules."""
    if not with_rules:
        return {
            "protected": assignment is not None,
            "policy": {"id": assignment.policy_id, "name": assignment.policy.name} if assignment else None,
            "assigned_by": (
                {"rule": "a protection rule" if assignment.rule_id else None, "person": None}
                if assignment
                else None
            ),
            "reason": "",
            "rules_say": "excluded by a rule"
            if decision.excluded_by
            else ("" if assignment else "no policy"),
            "excluded_by": "a protection rule" if decision.excluded_by else None,
            "rules": [],
        }
    return {
        "protected": assignment is not None,
        "policy": {"id": assignment.policy_id, "name": assignment.policy.name} if assignment else None,
        "assigned_by": (
            {
                "rule": assignment.rule.name if assignment.rule else None,
                "person": assignment.assigned_by.get_username() if assignment.assigned_by else None,
            }
            if assignment
            else None
        ),
        "reason": assignment.reason if assignment else "",
        "rules_say": decision.summary,
        "excluded_by": decision.excluded_by.name if decision.excluded_by else None,
        "rules": [
            {
                "id": result.rule.pk,
                "name": result.rule.name,
                "position": result.rule.position,
                "action": result.rule.action,
                "enabled": result.rule.enabled,
                "matched": result.matched,
                "note": result.note,
                "criteria": [
                    {"name": c.name, "wanted": c.wanted, "actual": c.actual, "matched": c.matched}
                    for c in result.criteria
                ],
            }
            for result in decision.trace
        ],
    }


class BackupRunSerializer(serializers.ModelSerializer):
    machine_name = serializers.CharField(source="machine.name", read_only=True)
    eta_seconds = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="Seconds to go at the current rate; null until there is a rate.",
    )

    class Meta:
        model = BackupRun
        fields = [
            "id",
            "machine",
            "machine_name",
            "policy",
            "repository",
            "proxy",
            "state",
            "trigger",
            "attempt",
            "queued_at",
            "started_at",
            "finished_at",
            "phase",
            "current_disk",
            "bytes_total",
            "bytes_done",
            "bytes_new",
            "bytes_stored",
            "rate",
            "eta_seconds",
            "snapshot_id",
            "cancel_requested",
            "error",
        ]
        read_only_fields = fields


class CopyTargetSerializer(serializers.ModelSerializer):
    class Meta:
        model = CopyTarget
        fields = ["id", "policy", "repository", *services.COPY_TARGET_FIELDS]
        validators: list[Any] = []  # the service says why a pair is refused, on the repository field

    def create(self, validated: dict[str, Any]) -> CopyTarget:
        try:
            return services.add_copy_target(actor=self.context["request"].user, **validated)
        except services.CopyTargetRefused as error:
            raise serializers.ValidationError({"repository": [str(error)]}) from None
