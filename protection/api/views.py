from __future__ import annotations

from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from core.permissions import IsBackupAdmin, ReadScopedWriteAdmin
from inventory.models import Machine
from protection import services
from protection.api.serializers import (
    AlertSerializer,
    AssignSerializer,
    BackupRunSerializer,
    CopyTargetSerializer,
    PolicySerializer,
    ProtectionRuleSerializer,
    decision_data,
)
from protection.backup import cancel_run
from protection.filters import AlertFilter
from protection.models import Alert, Assignment, BackupRun, CopyTarget, Policy, ProtectionRule
from protection.rules import evaluate


class PolicyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Protection policies. Everyone reads them (a machine names its policy); admins change them."""

    serializer_class = PolicySerializer
    permission_classes = [ReadScopedWriteAdmin]
    search_fields = ["name"]

    def get_queryset(self) -> QuerySet[Policy]:
        user = self.request.user
        policies = Policy.objects.visible_to(user)
        if getattr(user, "sees_all_machines", False):
            return policies.annotate(machine_count=Count("assignments"))
        # Counts are scoped too: machines outside the user's groups are not counted.
        visible = Machine.objects.visible_to(user).values("pk")
        return policies.annotate(
            machine_count=Count("assignments", filter=Q(assignments__machine__in=visible))
        )


class CopyTargetViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Where each policy copies its recovery points, with each copy's own retention (backup admins)."""

    serializer_class = CopyTargetSerializer
    permission_classes = [IsBackupAdmin]
    filterset_fields = ["policy", "repository"]

    def get_queryset(self) -> QuerySet[CopyTarget]:
        return CopyTarget.objects.visible_to(self.request.user).select_related("policy", "repository")

    def perform_destroy(self, instance: CopyTarget) -> None:
        services.remove_copy_target(actor=self.request.user, target=instance)  # type: ignore[arg-type]


class ProtectionRuleViewSet(viewsets.ModelViewSet):
    """Auto-protection rules, in order (backup admins). Every change is applied to all machines at once."""

    serializer_class = ProtectionRuleSerializer
    permission_classes = [IsBackupAdmin]

    def get_queryset(self) -> QuerySet[ProtectionRule]:
        return ProtectionRule.objects.visible_to(self.request.user).select_related("policy", "match_source")

    def perform_destroy(self, instance: ProtectionRule) -> None:
        services.delete_rule(actor=self.request.user, rule=instance)  # type: ignore[arg-type]

    @extend_schema(request=ProtectionRuleSerializer, responses={200: dict})
    @action(detail=False, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request) -> Response:
        """Which machines a rule (not saved) would match, and what all the rules would then decide."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule = ProtectionRule(**{k: v for k, v in serializer.validated_data.items()})
        if rule.position is None:
            rule.position = 10**9
        matches = services.dry_run(rule, Machine.objects.present().select_related("source"))
        return Response(
            {
                "count": len(matches),
                "machines": [
                    {"id": machine.pk, "name": machine.name, "decision": decision.summary}
                    for machine, decision in matches[:500]
                ],
            }
        )


class AlertViewSet(viewsets.ReadOnlyModelViewSet):
    """Alerts about machines you may see (admins and auditors: all). ?open=true for the open ones; ?machine=
    also finds the grouped alerts that list the machine. Admins acknowledge."""

    serializer_class = AlertSerializer
    permission_classes = [ReadScopedWriteAdmin]
    filterset_class = AlertFilter

    def get_queryset(self) -> QuerySet[Alert]:
        alerts = Alert.objects.visible_to(self.request.user).select_related("machine", "acknowledged_by")
        if self.request.query_params.get("open") in ("1", "true", "yes"):
            alerts = alerts.open()
        return alerts

    @extend_schema(request=None, responses=AlertSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsBackupAdmin])
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        alert = services.acknowledge_alert(actor=request.user, alert=self.get_object())  # type: ignore[arg-type]
        return Response(AlertSerializer(alert, context={"request": request}).data)


class MachineProtectionViewSet(viewsets.GenericViewSet):
    """Why a machine is protected, or not, rule by rule; admins assign a policy by hand."""

    permission_classes = [ReadScopedWriteAdmin]
    serializer_class = AssignSerializer

    def get_queryset(self) -> QuerySet[Machine]:
        return Machine.objects.visible_to(self.request.user).select_related("source")

    @extend_schema(responses={200: dict})
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        machine = self.get_object()
        rules = list(ProtectionRule.objects.select_related("policy", "match_source"))
        assignment = (
            Assignment.objects.filter(machine=machine).select_related("policy", "rule", "assigned_by").first()
        )
        with_rules = getattr(request.user, "sees_all_machines", False)
        return Response(decision_data(evaluate(machine, rules), assignment, with_rules=with_rules))

    @extend_schema(request=AssignSerializer, responses={200: dict})
    def update(self, request: Request, pk: str | None = None) -> Response:
        """Assign a policy by hand (rules then leave the machine alone), or policy null to let the rules decide."""
        machine = self.get_object()
        serializer = AssignSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.assign_policy(
            actor=request.user,  # type: ignore[arg-type]
            machine=machine,
            policy=serializer.validated_data["policy"],
            reason=serializer.validated_data.get("reason", ""),
        )
        return self.retrieve(request, pk)

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        return self.update(request, pk)


class BackupRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Backup runs of the machines you may see (live figures; the WebSocket streams the same). Admins cancel."""

    serializer_class = BackupRunSerializer
    permission_classes = [ReadScopedWriteAdmin]
    filterset_fields = ["machine", "state", "policy"]

    def get_queryset(self) -> QuerySet[BackupRun]:
        return BackupRun.objects.visible_to(self.request.user).select_related("machine")

    @extend_schema(request=None, responses=BackupRunSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsBackupAdmin])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        run = cancel_run(run=self.get_object(), actor=request.user)  # type: ignore[arg-type]
        return Response(BackupRunSerializer(run).data)
