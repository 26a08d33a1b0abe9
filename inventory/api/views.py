from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import mixins, viewsets

from core.permissions import ReadScopedWriteAdmin
from inventory import services
from inventory.api.serializers import MachineGroupSerializer, MachineSerializer
from inventory.filters import MachineFilter
from inventory.models import Machine, MachineGroup


class MachineGroupViewSet(viewsets.ModelViewSet):
    """Machine groups scope help-desk operators and owners. Everyone reads the groups they may see."""

    serializer_class = MachineGroupSerializer
    permission_classes = [ReadScopedWriteAdmin]
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at"]

    def get_queryset(self) -> QuerySet[MachineGroup]:
        return MachineGroup.objects.visible_to(self.request.user).prefetch_related("members", "machines")

    def perform_destroy(self, instance: MachineGroup) -> None:
        services.delete_machine_group(actor=self.request.user, group=instance)  # type: ignore[arg-type]


class MachineViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """Machines you may see. Admins may set owner, jurisdiction and groups; discovery sets the rest."""

    serializer_class = MachineSerializer
    permission_classes = [ReadScopedWriteAdmin]
    filterset_class = MachineFilter
    ordering_fields = ["name", "kind", "platform", "last_seen", "first_seen"]

    def get_queryset(self) -> QuerySet[Machine]:
        return Machine.objects.visible_to(self.request.user).prefetch_related("disks", "groups")
