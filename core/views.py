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

    def _events(self) -> tuple[Any, dict[str, str]]:
        events = AuditEvent.objects.visible_to(self.request.user)
        filters = {
            key: self.request.GET.get(key, "").strip() for key in ("action", "actor", "since", "until")
        }
        if filters["action"]:
            events = events.filter(action__startswith=filters["action"])
        if filters["actor"]:
            events = events.filter(actor_name__iexact=filters["actor"])
        for key, lookup, extra_day in (("since", "at__gte", 0), ("until", "at__lt", 1)):
            day = _date(filters[key])
            if day is None:
                filters[key] = ""  # not a date: ignored, and the field shows empty
                continue
            moment = timezone.make_aware(datetime.datetime.combine(day, datetime.time()))
            events = events.filter(**{lookup: moment + datetime.timedelta(days=extra_day)})
        return events, filters

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.GET.get("format") == "csv":
            return self._csv()
        return super().get(request, *args, **kwargs)

    def _csv(self) -> HttpResponse:
        """The filtered log as CSV (streamed, every matching event; the change as JSON)."""
        import csv
        import json

        from django.http import StreamingHttpResponse

        events, _ = self._events()

        class Echo:
            def write(self, value: str) -> str:
                return value

        writer = csv.writer(Echo())

        def rows() -> Any:
            yield writer.writerow(["at", "who", "from", "action", "what", "before", "after"])
            for event in events.iterator(chunk_size=1000):
                yield writer.writerow(
                    _cell(value)
                    for value in [
                        event.at.isoformat(),
                        event.actor_name or "system",
                        event.ip_address or "",
                        event.action,
                        event.target_repr,
                        json.dumps(event.before, default=str) if event.before else "",
                        json.dumps(event.after, default=str) if event.after else "",
                    ]
                )

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="bulwark-audit.csv"'
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        events, filters = self._events()
        page = Paginator(events, PAGE_SIZE).get_page(self.request.GET.get("page"))
        for event in page:
            event.changes = _changes(event.before, event.after)  # type: ignore[attr-defined]
        context["page"] = page
        context["filters"] = filters
        query = self.request.GET.copy()
        query.pop("page", None)
        query["format"] = "csv"
        context["csv_query"] = query.urlencode()
        context["actions"] = (
            AuditEvent.objects.visible_to(self.request.user)
            .order_by()
            .values_list("action", flat=True)
            .distinct()
        )
        return context


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run: text starting like a formula is quoted."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _date(value: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _changes(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """(field, before, after) for the fields that changed; every field when only one side exists."""
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    keys = list(dict.fromkeys([*before, *after]))
    if before and after:
        return [(key, before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)]
    return [(key, before.get(key), after.get(key)) for key in keys]


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
