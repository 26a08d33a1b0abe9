from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core import services
from core.api.serializers import (
    ApiTokenSerializer,
    AuditEventSerializer,
    CredentialSerializer,
    UserSerializer,
)
from core.models import ApiToken, AuditEvent, Credential, User
from core.permissions import IsBackupAdmin, IsSignedIn, ReadsAudit


class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Accounts, their roles and machine-group scopes (backup admins). Deactivate instead of deleting."""

    serializer_class = UserSerializer
    permission_classes = [IsBackupAdmin]
    filterset_fields = ["role", "is_active"]
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "role", "last_login"]

    def get_queryset(self) -> QuerySet[User]:
        return User.objects.visible_to(self.request.user).prefetch_related("machine_groups")

    @action(detail=False, methods=["get"], permission_classes=[IsSignedIn])
    def me(self, request: Request) -> Response:
        """The signed-in account."""
        return Response(self.get_serializer(request.user).data)


class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your API tokens. The key is returned once, when the token is created; DELETE revokes it."""

    serializer_class = ApiTokenSerializer
    permission_classes = [IsSignedIn]

    def get_queryset(self) -> QuerySet[ApiToken]:
        return ApiToken.objects.visible_to(self.request.user)

    def perform_destroy(self, instance: ApiToken) -> None:
        services.revoke_api_token(actor=self.request.user, token=instance)  # type: ignore[arg-type]

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        self.perform_destroy(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "The request conflicts with what exists."
    default_code = "conflict"


class CredentialViewSet(viewsets.ModelViewSet):
    """Credentials for sources, storage and repositories (backup admins). Secrets are write-only."""

    serializer_class = CredentialSerializer
    permission_classes = [IsBackupAdmin]
    filterset_fields = ["kind"]
    search_fields = ["name", "username"]

    def get_queryset(self) -> QuerySet[Credential]:
        return Credential.objects.visible_to(self.request.user)

    def perform_destroy(self, instance: Credential) -> None:
        try:
            services.delete_credential(actor=self.request.user, credential=instance)  # type: ignore[arg-type]
        except services.CredentialInUse as error:
            raise Conflict(str(error)) from None


class AuditEventFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt")
    action = django_filters.CharFilter(lookup_expr="startswith")

    class Meta:
        model = AuditEvent
        fields = ["actor", "action", "target_type", "target_id", "since", "until"]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log (admins and auditors): every change and every sign-in."""

    serializer_class = AuditEventSerializer
    permission_classes = [ReadsAudit]
    filterset_class = AuditEventFilter
    search_fields = ["actor_name", "action", "target_repr"]
    ordering_fields = ["at"]

    def get_queryset(self) -> QuerySet[AuditEvent]:
        return AuditEvent.objects.visible_to(self.request.user)
