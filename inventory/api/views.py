from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from connectors.base import ConnectorError
from core.permissions import IsBackupAdmin, ReadScopedWriteAdmin
from inventory import agents, discovery, services
from inventory.api.serializers import (
    AgentEnrolSerializer,
    AgentHeartbeatSerializer,
    DiscoveryRunSerializer,
    EnrolmentTokenSerializer,
    MachineChangeSerializer,
    MachineGroupSerializer,
    MachineSerializer,
    SourceSerializer,
)
from inventory.filters import MachineFilter
from inventory.models import Agent, DiscoveryRun, EnrolmentToken, Machine, MachineChange, MachineGroup, Source


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
        return (
            Machine.objects.visible_to(self.request.user)
            .select_related("assignment__policy", "source")
            .prefetch_related("disks", "groups")
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One page of machines, each with its protection state (computed for the page in a few queries)."""
        from protection.states import states_for

        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None  # the API always paginates
        context = {**self.get_serializer_context(), "protection_states": states_for(page)}
        return self.get_paginated_response(MachineSerializer(page, many=True, context=context).data)

    @extend_schema(responses=MachineChangeSerializer(many=True))
    @action(detail=True, methods=["get"])
    def history(self, request: Request, pk: str | None = None) -> Response:
        """What happened to this machine: discovered, renamed, moved, gone, protection changes."""
        machine = self.get_object()
        changes = self.paginate_queryset(MachineChange.objects.filter(machine=machine))
        return self.get_paginated_response(MachineChangeSerializer(changes, many=True).data)


class SourceViewSet(viewsets.ModelViewSet):
    """vCenter, ESXi and Hyper-V sources (backup admins). Secrets are write-only."""

    serializer_class = SourceSerializer
    permission_classes = [IsBackupAdmin]
    search_fields = ["name", "address"]
    ordering_fields = ["name", "kind", "state", "last_success_at"]

    def get_queryset(self) -> QuerySet[Source]:
        return (
            Source.objects.visible_to(self.request.user)
            .select_related("credential")
            .annotate(machine_count=Count("machines", filter=Q(machines__gone_since__isnull=True)))
        )

    def perform_destroy(self, instance: Source) -> None:
        services.delete_source(actor=self.request.user, source=instance)  # type: ignore[arg-type]

    @extend_schema(request=None, responses={200: dict})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Connect and log in now: 200 with what answered, or 400 with the reason and its code."""
        source = self.get_object()
        try:
            product = discovery.test_source(source)
        except ConnectorError as error:
            return Response(
                {"ok": False, "code": error.code, "detail": str(error)}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response({"ok": True, "product": product})

    @extend_schema(request=None, responses={202: DiscoveryRunSerializer})
    @action(detail=True, methods=["post"])
    def discover(self, request: Request, pk: str | None = None) -> Response:
        """Queue a discovery now (or return the one already queued or running)."""
        run = discovery.queue_discovery(source=self.get_object(), actor=request.user)  # type: ignore[arg-type]
        return Response(DiscoveryRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class DiscoveryRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Discovery runs: state, counts, and the reason of a failure (backup admins)."""

    serializer_class = DiscoveryRunSerializer
    permission_classes = [IsBackupAdmin]
    filterset_fields = ["source", "state", "trigger"]
    ordering_fields = ["queued_at", "finished_at"]

    def get_queryset(self) -> QuerySet[DiscoveryRun]:
        return DiscoveryRun.objects.visible_to(self.request.user).select_related("source")


class EnrolmentTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """One-time agent enrolment tokens (backup admins). The token is returned once; DELETE revokes it."""

    serializer_class = EnrolmentTokenSerializer
    permission_classes = [IsBackupAdmin]

    def get_queryset(self) -> QuerySet[EnrolmentToken]:
        return EnrolmentToken.objects.visible_to(self.request.user).prefetch_related("groups")

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        agents.revoke_enrolment_token(actor=request.user, token=self.get_object())  # type: ignore[arg-type]
        return Response(status=status.HTTP_204_NO_CONTENT)


class EnrolThrottle(AnonRateThrottle):
    rate = "30/hour"


def _client_address(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class AgentEnrolView(APIView):
    """An agent trades a one-time enrolment token for its key (no user session: the token is the credential)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [EnrolThrottle]

    @extend_schema(request=AgentEnrolSerializer, responses={201: dict})
    def post(self, request: Request) -> Response:
        if not request.is_secure() and not services.insecure_agents_allowed():
            raise exceptions.PermissionDenied("Agents enrol over HTTPS only.")
        serializer = AgentEnrolSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            agent, key = agents.enrol(
                token_value=serializer.validated_data["token"],
                facts=serializer.validated_data["facts"],
                address=_client_address(request),
            )
        except agents.EnrolmentRefused as error:
            raise exceptions.AuthenticationFailed(str(error)) from None
        except agents.EnrolmentConflict as error:
            return Response(
                {"detail": str(error), "code": "enrolment_conflict"}, status=status.HTTP_409_CONFLICT
            )
        except ValueError as error:
            raise exceptions.ValidationError({"facts": [str(error)]}) from None
        return Response(
            {"agent_key": key, "machine": agent.machine_id, "heartbeat_seconds": agent.heartbeat_seconds},
            status=status.HTTP_201_CREATED,
        )


class AgentKeyAuthentication:
    """`Authorization: Agent bwa_<prefix>_<secret>`; only the agent endpoints accept it."""

    def authenticate(self, request: Request) -> tuple[Any, Agent] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "agent" or not key:
            return None
        agent = agents.authenticate(key.strip())
        if agent is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked agent key.")
        from django.contrib.auth.models import AnonymousUser

        return AnonymousUser(), agent

    def authenticate_header(self, request: Request) -> str:
        return "Agent"


class AgentHeartbeatView(APIView):
    """An enrolled agent reports it is alive, with the host's current facts."""

    authentication_classes = [AgentKeyAuthentication]
    permission_classes = [AllowAny]

    @extend_schema(request=AgentHeartbeatSerializer, responses={200: dict})
    def post(self, request: Request) -> Response:
        if not isinstance(request.auth, Agent):
            raise exceptions.NotAuthenticated("An agent key is required.")
        serializer = AgentHeartbeatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        agent = agents.heartbeat(
            agent=request.auth, facts=serializer.validated_data["facts"], address=_client_address(request)
        )
        from protection.agent_runs import jobs_for

        return Response({"ok": True, "heartbeat_seconds": agent.heartbeat_seconds, "jobs": jobs_for(agent)})
