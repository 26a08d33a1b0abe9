from __future__ import annotations

import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.generic import FormView, TemplateView

from catalog.models import RecoveryPoint
from core import services
from core.access import ADMIN_ONLY, ALL_ROLES, AUDIT_READERS, RoleRequiredMixin, ScopedObjectFormMixin
from core.choices import Role
from core.forms import ThrottledAuthenticationForm, UserForm
from core.models import AuditEvent, Credential, User
from inventory.models import Machine, MachineGroup, Source
from protection.choices import ACTIVE_RUN_STATES, RunState
from protection.models import Alert, BackupRun

PAGE_SIZE = 50


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    pass


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: the process answers and the database is reachable; nothing more."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok"})


class DashboardView(RoleRequiredMixin, TemplateView):
    template_name = "core/dashboard.html"
    allowed_roles = ALL_ROLES

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        machines = Machine.objects.visible_to(user)
        present = machines.present()
        context["counts"] = {
            "machines": present.count(),
            "vms": present.filter(kind="vm").count(),
            "physical": present.filter(kind="physical").count(),
            "gone": machines.gone().count(),
        }
        from protection.states import count_states, states_for

        context["protection"] = count_states(states_for(present))
        context["alerts"] = Alert.objects.visible_to(user).open().select_related("machine")[:6]
        runs = BackupRun.objects.visible_to(user)
        day_ago = timezone.now() - datetime.timedelta(hours=24)
        points = RecoveryPoint.objects.visible_to(user).aggregate(
            logical=Sum("logical_bytes"), stored=Sum("stored_bytes")
        )
        context["runs"] = {
            "active": runs.filter(state__in=ACTIVE_RUN_STATES).count(),
            "failed_24h": runs.filter(state=RunState.FAILED, finished_at__gte=day_ago).count(),
            "committed_24h": runs.filter(state=RunState.COMMITTED, finished_at__gte=day_ago).count(),
            "running": list(runs.filter(state=RunState.RUNNING).select_related("machine")[:5]),
            "logical": points["logical"] or 0,
            "stored": points["stored"] or 0,
        }
        if user.role == Role.ADMIN:  # type: ignore[union-attr]
            context["sources"] = {
                "total": Source.objects.count(),
                "failed": list(Source.objects.filter(state="failed", enabled=True).values_list("pk", "name")),
            }
            context["admin_counts"] = {
                "ungrouped": present.filter(groups__isnull=True).count(),
                "groups": MachineGroup.objects.count(),
                "users": User.objects.filter(is_active=True).count(),
                "credentials": Credential.objects.count(),
            }
        if user.role in AUDIT_READERS:  # type: ignore[union-attr]
            context["recent_events"] = AuditEvent.objects.visible_to(user).select_related("actor")[:8]
        return context


class AuditLogView(RoleRequiredMixin, TemplateView):
    template_name = "core/audit_log.html"
    allowed_roles = AUDIT_READERS

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        events = AuditEvent.objects.visible_to(self.request.user)
        action = self.request.GET.get("action", "").strip()
        actor = self.request.GET.get("actor", "").strip()
        if action:
            events = events.filter(action__startswith=action)
        if actor:
            events = events.filter(actor_name__iexact=actor)
        context["page"] = Paginator(events, PAGE_SIZE).get_page(self.request.GET.get("page"))
        context["filters"] = {"action": action, "actor": actor}
        context["actions"] = (
            AuditEvent.objects.visible_to(self.request.user)
            .order_by()
            .values_list("action", flat=True)
            .distinct()
        )
        return context


class UserListView(RoleRequiredMixin, TemplateView):
    template_name = "core/user_list.html"
    allowed_roles = ADMIN_ONLY

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        users = User.objects.visible_to(self.request.user).prefetch_related("machine_groups")
        context["page"] = Paginator(users, PAGE_SIZE).get_page(self.request.GET.get("page"))
        return context


class UserCreateView(RoleRequiredMixin, FormView):
    template_name = "core/user_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = UserForm

    def form_valid(self, form: UserForm) -> HttpResponse:
        data = form.cleaned_data
        user = services.create_user(
            actor=self.request.user,  # type: ignore[arg-type]
            username=data["username"],
            role=data["role"],
            password=data["password"] or None,
            is_active=data["is_active"],
            email=data["email"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            machine_groups=data["machine_groups"],
        )
        messages.success(self.request, f"User {user.username} created.")
        return HttpResponseRedirect(reverse("user-list"))


class UserUpdateView(RoleRequiredMixin, ScopedObjectFormMixin, FormView):
    template_name = "core/user_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = UserForm
    model = User

    def form_valid(self, form: UserForm) -> HttpResponse:
        data = form.cleaned_data
        if self.object == self.request.user and (data["role"] != Role.ADMIN or not data["is_active"]):
            form.add_error("role", "You cannot remove your own admin role or deactivate yourself.")
            return self.form_invalid(form)
        try:
            self._save(data)
        except services.LastAdmin as error:
            form.add_error("role", str(error))
            return self.form_invalid(form)
        messages.success(self.request, f"User {self.object.username} saved.")
        return HttpResponseRedirect(reverse("user-list"))

    def _save(self, data: dict[str, Any]) -> None:
        services.update_user(
            actor=self.request.user,  # type: ignore[arg-type]
            user=self.object,
            role=data["role"],
            is_active=data["is_active"],
            email=data["email"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            machine_groups=data["machine_groups"],
            password=data["password"] or None,
            keep_api_tokens=data.get("keep_api_tokens", False),
        )
