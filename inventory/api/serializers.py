from __future__ import annotations

import json
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.models import Credential, User
from inventory import agents, services
from inventory.choices import Platform
from inventory.models import (
    DiscoveryRun,
    Disk,
    EnrolmentToken,
    Machine,
    MachineChange,
    MachineGroup,
    Source,
)


class MachineGroupSerializer(serializers.ModelSerializer):
    members = serializers.PrimaryKeyRelatedField(many=True, required=False, queryset=User.objects.all())
    machines = serializers.PrimaryKeyRelatedField(many=True, required=False, queryset=Machine.objects.all())

    class Meta:
        model = MachineGroup
        fields = ["id", *services.GROUP_AUDIT_FIELDS, "created_at"]
        read_only_fields = ["created_at"]

    def create(self, validated: dict[str, Any]) -> MachineGroup:
        return services.create_machine_group(actor=self.context["request"].user, **validated)

    def update(self, instance: MachineGroup, validated: dict[str, Any]) -> MachineGroup:
        return services.update_machine_group(actor=self.context["request"].user, group=instance, **validated)


class DiskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Disk
        fields = ["id", "key", "label", "capacity_bytes", "path", "change_tracking"]


class ProtectionStateSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["protected", "at_risk", "waiting", "unprotected", "excluded"])
    reason = serializers.CharField()
    last_point_at = serializers.DateTimeField(allow_null=True)
    next_run_at = serializers.DateTimeField(allow_null=True)


class MachineSerializer(serializers.ModelSerializer):
    disks = DiskSerializer(many=True, read_only=True)
    policy = serializers.SerializerMethodField()
    protection = serializers.SerializerMethodField(
        help_text="Protected means recoverable: a committed point within the RPO (protection/states.py)."
    )
    groups = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=MachineGroup.objects.all()
    )

    class Meta:
        model = Machine
        fields = [
            "id",
            "identity",
            "name",
            "kind",
            "platform",
            "hostname",
            "guest_os",
            "owner",
            "jurisdiction",
            "groups",
            "first_seen",
            "last_seen",
            "gone_since",
            "source",
            "external_id",
            "power_state",
            "datacenter",
            "cluster",
            "host",
            "folder",
            "resource_pool",
            "datastores",
            "tags",
            "attributes",
            "ip_addresses",
            "template",
            "facts",
            "policy",
            "protection",
            "disks",
        ]
        # Discovery owns the facts it finds; people own owner, jurisdiction and groups.
        read_only_fields = [
            "identity",
            "name",
            "kind",
            "platform",
            "hostname",
            "guest_os",
            "first_seen",
            "last_seen",
            "gone_since",
            "source",
            "external_id",
            "power_state",
            "datacenter",
            "cluster",
            "host",
            "folder",
            "resource_pool",
            "datastores",
            "tags",
            "attributes",
            "ip_addresses",
            "template",
            "facts",
        ]

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "reason": {"type": "string"},
            },
        }
    )
    def get_policy(self, obj: Machine) -> dict[str, Any] | None:
        assignment = getattr(obj, "assignment", None)
        if assignment is None:
            return None
        request = self.context.get("request")
        # The reason names rules and their criteria: admins' and auditors' to read.
        sees_rules = request is not None and getattr(request.user, "sees_all_machines", False)
        reason = assignment.reason if sees_rules else ("by a rule" if assignment.rule_id else "by hand")
        return {"id": assignment.policy_id, "name": assignment.policy.name, "reason": reason}

    @extend_schema_field(ProtectionStateSerializer)
    def get_protection(self, obj: Machine) -> dict[str, Any]:
        from protection.states import state_of

        states = self.context.get("protection_states") or {}
        info = states.get(obj.pk) or state_of(obj)
        request = self.context.get("request")
        sees_rules = request is not None and getattr(request.user, "sees_all_machines", False)
        reason = info.reason if sees_rules or info.state != "excluded" else "excluded by a protection rule"
        return {
            "state": info.state.value,
            "reason": reason,
            "last_point_at": info.last_point_at,
            "next_run_at": info.next_run_at,
        }

    def update(self, instance: Machine, validated: dict[str, Any]) -> Machine:
        return services.update_machine(actor=self.context["request"].user, machine=instance, **validated)


class SourceSerializer(serializers.ModelSerializer):
    """A discovery source. The password is write-only; it is stored as an encrypted credential."""

    username = serializers.CharField(write_only=True, required=False)
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})
    credential = serializers.PrimaryKeyRelatedField(queryset=Credential.objects.all(), required=False)
    machines = serializers.IntegerField(source="machine_count", read_only=True)

    class Meta:
        model = Source
        fields = [
            "id",
            "name",
            "kind",
            "address",
            "port",
            "credential",
            "username",
            "password",
            "verify_tls",
            "ca_certificate",
            "thumbprint",
            "options",
            "site",
            "jurisdiction",
            "enabled",
            "discovery_interval_minutes",
            "watch",
            "watch_state",
            "watch_detail",
            "watch_changed_at",
            "state",
            "last_error",
            "last_success_at",
            "last_attempt_at",
            "product",
            "remote_id",
            "topology",
            "machines",
            "created_at",
        ]
        read_only_fields = [
            "watch_state",
            "watch_detail",
            "watch_changed_at",
            "state",
            "last_error",
            "last_success_at",
            "last_attempt_at",
            "product",
            "remote_id",
            "topology",
            "created_at",
        ]

    def validate_options(self, value: Any) -> dict[str, Any]:
        return services.clean_source_options(value)

    def validate_address(self, value: str) -> str:
        from django.core.exceptions import ValidationError

        from inventory.forms import outbound_allowed

        try:
            return outbound_allowed(value.strip())
        except ValidationError as error:
            raise serializers.ValidationError(error.messages) from None

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        creating = self.instance is None
        has_credential = "credential" in data
        has_secret = bool(data.get("password"))
        if creating and not has_credential and not (has_secret and data.get("username")):
            raise serializers.ValidationError(
                {"password": ["Give username and password, or an existing credential."]}
            )
        if has_credential and has_secret:
            raise serializers.ValidationError({"credential": ["Give a credential or a password, not both."]})
        return data

    def create(self, validated: dict[str, Any]) -> Source:
        return services.create_source(actor=self.context["request"].user, **validated)

    def update(self, instance: Source, validated: dict[str, Any]) -> Source:
        return services.update_source(actor=self.context["request"].user, source=instance, **validated)


class DiscoveryRunSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)

    class Meta:
        model = DiscoveryRun
        fields = [
            "id",
            "source",
            "source_name",
            "state",
            "trigger",
            "queued_at",
            "started_at",
            "finished_at",
            "phase",
            "found",
            "added",
            "updated",
            "gone",
            "returned",
            "error_code",
            "error",
        ]
        read_only_fields = fields


class MachineChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = MachineChange
        fields = ["id", "at", "kind", "summary", "detail"]
        read_only_fields = fields


class EnrolmentTokenSerializer(serializers.ModelSerializer):
    hours = serializers.IntegerField(write_only=True, min_value=1, max_value=24 * 30, default=24)
    token = serializers.SerializerMethodField()
    groups = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=MachineGroup.objects.all()
    )
    machine = serializers.PrimaryKeyRelatedField(
        required=False,
        allow_null=True,
        queryset=Machine.objects.filter(platform=Platform.AGENT),
        help_text="Re-enrol this existing agent host (its old key stops working); the token enrols nothing else.",
    )

    class Meta:
        model = EnrolmentToken
        fields = [
            "id",
            "label",
            "prefix",
            "groups",
            "machine",
            "hours",
            "token",
            "created_at",
            "expires_at",
            "used_at",
            "revoked_at",
        ]
        read_only_fields = ["prefix", "created_at", "expires_at", "used_at", "revoked_at"]

    def get_token(self, obj: EnrolmentToken) -> str | None:
        """Only in the answer to the creation: the token is never shown again."""
        return self.context.get("token_value")

    def create(self, validated: dict[str, Any]) -> EnrolmentToken:
        token, value = agents.create_enrolment_token(actor=self.context["request"].user, **validated)
        self.context["token_value"] = value
        return token


_MAX_BYTES = 1 << 62


def _text(max_length: int) -> serializers.CharField:
    return serializers.CharField(max_length=max_length, required=False, allow_blank=True)


class AgentDiskFactSerializer(serializers.Serializer):
    device = serializers.CharField(max_length=255)
    size_bytes = serializers.IntegerField(min_value=0, max_value=_MAX_BYTES, required=False, default=0)
    model = _text(255)


class AgentVolumeFactSerializer(serializers.Serializer):
    device = serializers.CharField(max_length=1000)
    mountpoint = serializers.CharField(max_length=4096)
    filesystem = _text(64)
    size_bytes = serializers.IntegerField(min_value=0, max_value=_MAX_BYTES, required=False, default=0)
    free_bytes = serializers.IntegerField(min_value=0, max_value=_MAX_BYTES, required=False, default=0)


class AgentFactsSerializer(serializers.Serializer):
    """What an agent reports about its host; a wrong type is a 400 naming the field, never a 500."""

    machine_id = serializers.CharField(max_length=128)
    hostname = serializers.CharField(max_length=255)
    fqdn = _text(255)
    os = _text(255)
    kernel = _text(255)
    architecture = _text(64)
    cpus = serializers.IntegerField(min_value=0, max_value=1 << 20, required=False)
    memory_bytes = serializers.IntegerField(min_value=0, max_value=_MAX_BYTES, required=False)
    boot_time = serializers.IntegerField(min_value=0, max_value=_MAX_BYTES, required=False)
    volumes = serializers.ListField(child=AgentVolumeFactSerializer(), max_length=1024, required=False)
    disks = serializers.ListField(child=AgentDiskFactSerializer(), max_length=1024, required=False)
    ip_addresses = serializers.ListField(child=serializers.IPAddressField(), max_length=256, required=False)
    agent_version = _text(32)
    heartbeat_seconds = serializers.IntegerField(min_value=5, max_value=24 * 3600, required=False)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        # Plain dicts and lists all the way down: the facts are stored as JSON.
        return json.loads(json.dumps(value))


class AgentHeartbeatFactsSerializer(AgentFactsSerializer):
    machine_id = serializers.CharField(max_length=128, required=False)


class AgentEnrolSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)
    facts = AgentFactsSerializer()


class AgentHeartbeatSerializer(serializers.Serializer):
    facts = AgentHeartbeatFactsSerializer(required=False, default=dict)
