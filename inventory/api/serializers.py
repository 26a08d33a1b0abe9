from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.models import User
from inventory import services
from inventory.models import Disk, Machine, MachineGroup


class MachineGroupSerializer(serializers.ModelSerializer):
    members = serializers.PrimaryKeyRelatedField(many=True, required=False, queryset=User.objects.all())
    machines = serializers.PrimaryKeyRelatedField(many=True, required=False, queryset=Machine.objects.all())

    class Meta:
        model = MachineGroup
        fields = ["id", "name", "description", "members", "machines", "created_at"]
        read_only_fields = ["created_at"]

    def create(self, validated: dict[str, Any]) -> MachineGroup:
        return services.create_machine_group(actor=self.context["request"].user, **validated)

    def update(self, instance: MachineGroup, validated: dict[str, Any]) -> MachineGroup:
        return services.update_machine_group(actor=self.context["request"].user, group=instance, **validated)


class DiskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Disk
        fields = ["id", "key", "label", "capacity_bytes"]


class MachineSerializer(serializers.ModelSerializer):
    disks = DiskSerializer(many=True, read_only=True)
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
        ]

    def update(self, instance: Machine, validated: dict[str, Any]) -> Machine:
        return services.update_machine(actor=self.context["request"].user, machine=instance, **validated)
