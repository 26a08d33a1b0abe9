from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from catalog.models import RecoveryPoint
from core.access import ADMIN_ONLY, ALL_ROLES, RoleRequiredMixin
from restores.models import RestoreKind, RestoreRequest
from restores.services import RestoreRefused, request_restore


class MachineRestoreView(RoleRequiredMixin, View):
    """POST from the machine page: restore a recovery point to image files or as a new VM."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        point = get_object_or_404(
            RecoveryPoint.objects.visible_to(request.user), pk=request.POST.get("point") or 0, machine_id=pk
        )
        kind = request.POST.get("kind", RestoreKind.IMAGE_FILES)
        try:
            restore = request_restore(
                actor=request.user, point=point, kind=kind, target=request.POST.get("target", "").strip()
            )  # type: ignore[arg-type]
        except RestoreRefused as error:
            messages.error(request, f"Cannot restore: {error}.")
            return HttpResponseRedirect(reverse("machine-detail", args=[pk]) + "#recovery-points")
        return HttpResponseRedirect(reverse("restore-detail", args=[restore.pk]))


class RestoreDetailView(RoleRequiredMixin, TemplateView):
    template_name = "restores/restore_detail.html"
    allowed_roles = ALL_ROLES

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["restore"] = get_object_or_404(
            RestoreRequest.objects.visible_to(self.request.user).select_related("machine", "point"),
            pk=self.kwargs["pk"],
        )
        return context
