"""The one DRF router: each app registers its viewsets here, under /api/."""

from rest_framework.routers import APIRootView, DefaultRouter

from core.api.views import ApiTokenViewSet, AuditEventViewSet, CredentialViewSet, UserViewSet
from core.permissions import IsSignedIn
from inventory.api.views import (
    DiscoveryRunViewSet,
    EnrolmentTokenViewSet,
    MachineGroupViewSet,
    MachineViewSet,
    SourceViewSet,
)
from protection.api.views import (
    AlertViewSet,
    BackupRunViewSet,
    CopyTargetViewSet,
    MachineProtectionViewSet,
    PolicyViewSet,
    ProtectionRuleViewSet,
)
from restores.api.views import RestoreViewSet


class BulwarkApiRoot(APIRootView):
    """The index of the API: every signed-in role may browse it; each endpoint checks its own access."""

    permission_classes = [IsSignedIn]


class Router(DefaultRouter):
    # One URL per resource: /api/machines/ only, not also /api/machines.json (keeps the role matrix honest).
    include_format_suffixes = False
    APIRootView = BulwarkApiRoot


router = Router()
router.register("users", UserViewSet, basename="user")
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("credentials", CredentialViewSet, basename="credential")
router.register("audit-events", AuditEventViewSet, basename="audit-event")
router.register("machine-groups", MachineGroupViewSet, basename="machine-group")
router.register("machines", MachineViewSet, basename="machine")
router.register("sources", SourceViewSet, basename="source")
router.register("discovery-runs", DiscoveryRunViewSet, basename="discovery-run")
router.register("enrolment-tokens", EnrolmentTokenViewSet, basename="enrolment-token")
router.register("policies", PolicyViewSet, basename="policy")
router.register("copy-targets", CopyTargetViewSet, basename="copy-target")
router.register("rules", ProtectionRuleViewSet, basename="rule")
router.register("alerts", AlertViewSet, basename="alert")
router.register("machine-protection", MachineProtectionViewSet, basename="machine-protection")
router.register("runs", BackupRunViewSet, basename="run")
router.register("restores", RestoreViewSet, basename="restore")
