from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import RecoveryPoint
from core.access import FILE_RESTORERS
from core.permissions import IsBackupAdmin, ReadScopedWriteAdmin
from restores.file_restores import FileRestoreRefused, decide, request_file_restore
from restores.models import Conflict, RestoreKind, RestoreRequest, RestoreTarget
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
            "volume",
            "paths",
            "conflict",
            "requested_by",
            "decided_by",
            "decided_at",
            "decision_reason",
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

    @action(detail=True, methods=["post"], permission_classes=[IsBackupAdmin])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        """Four-eyes: approve a restore held by its machine's restore rules (not one's own)."""
        return self._decide(request, approve=True)

    @action(detail=True, methods=["post"], permission_classes=[IsBackupAdmin])
    def refuse(self, request: Request, pk: str | None = None) -> Response:
        """Refuse a held restore; `reason` is required and shown to the requester."""
        return self._decide(request, approve=False)

    def _decide(self, request: Request, *, approve: bool) -> Response:
        restore = self.get_object()
        try:
            decided = decide(
                actor=request.user,  # type: ignore[arg-type]
                request_id=restore.pk,
                approve=approve,
                reason=str(request.data.get("reason", "")),
            )
        except FileRestoreRefused as error:
            raise serializers.ValidationError({"detail": [str(error)]}) from None
        return Response(RestoreSerializer(decided).data)


class RestoresFiles(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.role in FILE_RESTORERS)


class FileRestoreIn(serializers.Serializer):  # type: ignore[type-arg]
    point = serializers.IntegerField(min_value=1, max_value=2**62)
    volume = serializers.CharField(max_length=200)
    paths = serializers.ListField(child=serializers.CharField(max_length=4096), min_length=1, max_length=100)
    target = serializers.ChoiceField(choices=RestoreTarget.choices)
    folder = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")
    conflict = serializers.ChoiceField(choices=Conflict.choices, default=Conflict.KEEP_BOTH)
    smb_credential = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**62)


class FileRestoreView(APIView):
    """Files out of an image point, for admins and help-desk operators in scope: into the VM (original location
    or another folder) or as a download (GET /restores/<id>/download/ once it is ready); held for approval where
    the machine's restore rules demand it."""

    permission_classes = [RestoresFiles]

    @extend_schema(request=FileRestoreIn, responses={201: RestoreSerializer})
    def post(self, request: Request) -> Response:
        given = FileRestoreIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        point = RecoveryPoint.objects.visible_to(request.user).filter(pk=data.pop("point")).first()
        if point is None:
            raise serializers.ValidationError({"point": ["No such recovery point."]})
        try:
            restore = request_file_restore(actor=request.user, point=point, **data)  # type: ignore[arg-type]
        except FileRestoreRefused as error:
            raise serializers.ValidationError({"detail": [str(error)]}) from None
        return Response(RestoreSerializer(restore).data, status=status.HTTP_201_CREATED)
