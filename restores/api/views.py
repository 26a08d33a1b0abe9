from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from catalog.models import RecoveryPoint
from core.permissions import ReadScopedWriteAdmin
from restores.models import RestoreKind, RestoreRequest
from restores.services import RestoreRefused, request_restore


class RestoreSerializer(serializers.ModelSerializer):
    point = serializers.PrimaryKeyRelatedField(queryset=RecoveryPoint.objects.all())
    kind = serializers.ChoiceField(choices=RestoreKind.choices)

    class Meta:
        model = RestoreRequest
        fields = [
            "id",
            "machine",
            "point",
            "kind",
            "target",
            "state",
            "created_at",
            "started_at",
            "finished_at",
            "bytes_total",
            "bytes_done",
            "result",
            "error",
        ]
        read_only_fields = [f for f in fields if f not in ("point", "kind", "target")]


class RestoreViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Whole-machine restores of machines you may see; admins start them (to image files or as a new VM)."""

    serializer_class = RestoreSerializer
    permission_classes = [ReadScopedWriteAdmin]

    def get_queryset(self) -> QuerySet[RestoreRequest]:
        return RestoreRequest.objects.visible_to(self.request.user).select_related("machine")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        point = serializer.validated_data["point"]
        if not RecoveryPoint.objects.visible_to(request.user).filter(pk=point.pk).exists():
            raise serializers.ValidationError({"point": ["No such recovery point."]})
        try:
            restore = request_restore(
                actor=request.user,  # type: ignore[arg-type]
                point=point,
                kind=serializer.validated_data["kind"],
                target=serializer.validated_data["target"],
            )
        except RestoreRefused as error:
            raise serializers.ValidationError({"target": [str(error)]}) from None
        return Response(RestoreSerializer(restore).data, status=status.HTTP_201_CREATED)
