from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.generic import DetailView, FormView, TemplateView

from core.access import ADMIN_ONLY, ALL_ROLES, RoleRequiredMixin, ScopedObjectFormMixin
from inventory import services
from inventory.filters import MachineFilter
from inventory.forms import MachineGroupForm
from inventory.models import Machine, MachineGroup

PAGE_SIZE = 50
# Sort keys offered on the machines page (anything else falls back to name).
MACHINE_ORDERING = {
    "name": "name",
    "-name": "-name",
    "kind": "kind",
    "platform": "platform",
    "last_seen": "last_seen",
    "-last_seen": "-last_seen",
}


class MachineListView(RoleRequiredMixin, TemplateView):
    template_name = "inventory/machine_list.html"
    allowed_roles = ALL_ROLES

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        visible = Machine.objects.visible_to(self.request.user)
        machine_filter = MachineFilter(self.request.GET, queryset=visible, request=self.request)
        ordering = MACHINE_ORDERING.get(self.request.GET.get("sort", ""), "name")
        machines = machine_filter.qs.order_by(ordering, "pk").prefetch_related("groups", "disks")
        context.update(
            filter=machine_filter,
            page=Paginator(machines, PAGE_SIZE).get_page(self.request.GET.get("page")),
            sort=ordering,
            any_visible=visible.exists(),
        )
        return context


class MachineDetailView(RoleRequiredMixin, DetailView):
    template_name = "inventory/machine_detail.html"
    allowed_roles = ALL_ROLES
    context_object_name = "machine"

    def get_queryset(self) -> Any:
        # Out of scope looks exactly like "does not exist": 404, never 403.
        return Machine.objects.visible_to(self.request.user).prefetch_related("disks", "groups")


class MachineGroupListView(RoleRequiredMixin, TemplateView):
    template_name = "inventory/group_list.html"
    allowed_roles = ADMIN_ONLY

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        groups = MachineGroup.objects.visible_to(self.request.user).prefetch_related("members", "machines")
        context["page"] = Paginator(groups, PAGE_SIZE).get_page(self.request.GET.get("page"))
        return context


class MachineGroupCreateView(RoleRequiredMixin, FormView):
    template_name = "inventory/group_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = MachineGroupForm

    def form_valid(self, form: MachineGroupForm) -> HttpResponse:
        group = services.create_machine_group(actor=self.request.user, **form.cleaned_data)  # type: ignore[arg-type]
        messages.success(self.request, f"Machine group {group.name} created.")
        return HttpResponseRedirect(reverse("group-list"))


class MachineGroupUpdateView(RoleRequiredMixin, ScopedObjectFormMixin, FormView):
    template_name = "inventory/group_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = MachineGroupForm
    model = MachineGroup

    def form_valid(self, form: MachineGroupForm) -> HttpResponse:
        services.update_machine_group(
            actor=self.request.user,  # type: ignore[arg-type]
            group=self.object,
            **form.cleaned_data,
        )
        messages.success(self.request, f"Machine group {self.object.name} saved.")
        return HttpResponseRedirect(reverse("group-list"))
