from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views import View
from django.views.generic import DetailView, FormView, TemplateView

from connectors.base import ConnectorError
from core.access import ADMIN_ONLY, ALL_ROLES, RoleRequiredMixin, ScopedObjectFormMixin, posted_id, posted_ids
from core.choices import Role
from inventory import agents, discovery, services
from inventory.filters import MachineFilter
from inventory.forms import EnrolmentTokenForm, MachineGroupForm, SourceForm
from inventory.models import Agent, DiscoveryRun, EnrolmentToken, Machine, MachineChange, MachineGroup, Source

PAGE_SIZE = 50
# Sort keys offered on the machines page (anything else falls back to name).
# Sortable columns: ?sort=<key> or ?sort=-<key> (names sort as people read them: VM2 before VM10).
MACHINE_ORDERING = {
    "name": "sort_name",
    "kind": "kind",
    "platform": "platform",
    "source": "source__name",
    "host": "host",
    "last_seen": "last_seen",
}
PAGE_SIZES = (25, 50, 100, 200)


def _ordering(sort: str) -> tuple[str, str]:
    """(ORDER BY field, the sort key as asked) for ?sort=; unknown keys sort by name."""
    key = sort.lstrip("-")
    if key not in MACHINE_ORDERING:
        return "sort_name", "name"
    return ("-" if sort.startswith("-") else "") + MACHINE_ORDERING[key], sort


class MachineListView(RoleRequiredMixin, TemplateView):
    template_name = "inventory/machine_list.html"
    allowed_roles = ALL_ROLES

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        visible = Machine.objects.visible_to(self.request.user)
        machine_filter = MachineFilter(self.request.GET, queryset=visible, request=self.request)
        ordering, sort = _ordering(self.request.GET.get("sort", ""))
        size = self.request.GET.get("size", "")
        page_size = int(size) if size.isdigit() and int(size) in PAGE_SIZES else PAGE_SIZE
        machines = (
            machine_filter.qs.order_by(ordering, "pk")
            .select_related("assignment__policy")
            .prefetch_related("groups", "disks")
        )
        page = Paginator(machines.select_related("source"), page_size).get_page(self.request.GET.get("page"))
        from protection.states import states_for

        states = states_for(page.object_list)
        for machine in page.object_list:
            machine.protection = states[machine.pk]
        query = self.request.GET.copy()
        query.pop("page", None)
        query.pop("sort", None)
        context.update(
            filter=machine_filter,
            page=page,
            sort=sort,
            page_size=page_size,
            page_sizes=PAGE_SIZES,
            query=query.urlencode(),
            any_visible=visible.exists(),
            columns=[
                ("name", "Name"),
                ("kind", "Kind"),
                ("source", "Source"),
                ("", "Protection"),
                ("", "Last good point"),
                ("host", "Host"),
                ("", "OS"),
                ("", "Size"),
                ("", "Groups"),
                ("last_seen", "Last seen"),
            ],
        )
        if self.request.user.role == Role.ADMIN:  # type: ignore[union-attr]
            from protection.models import Policy

            context["bulk_policies"] = Policy.objects.order_by("name")
            context["bulk_groups"] = MachineGroup.objects.order_by("name")
        return context


class MachineBulkView(RoleRequiredMixin, View):
    """POST from the machine list: assign a policy, back up now, or add to a group, for the ticked machines."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest) -> HttpResponse:
        from protection import services as protection
        from protection.backup import back_up_now
        from protection.models import Policy

        ids = posted_ids(request.POST.getlist("machines"))
        machines = list(Machine.objects.visible_to(request.user).present().filter(pk__in=ids))
        back = reverse("machine-list") + ("?" + request.POST["query"] if request.POST.get("query") else "")
        if not machines:
            messages.error(request, "Tick the machines first.")
            return HttpResponseRedirect(back)
        action = request.POST.get("action", "")
        if action == "assign":
            policy = Policy.objects.filter(pk=posted_id(request.POST.get("policy"))).first()
            for machine in machines:
                protection.assign_policy(
                    actor=request.user, machine=machine, policy=policy, reason="bulk assignment"
                )  # type: ignore[arg-type]
            what = f"now under {policy.name}" if policy else "left to the rules"
            messages.success(request, f"{len(machines)} machine(s) {what}.")
        elif action == "backup":
            queued, refused = back_up_now(machines=machines, requested_by=request.user)  # type: ignore[arg-type]
            messages.success(request, f"{queued} backup(s) queued.")
            if refused:
                messages.error(request, "Not queued — " + "; ".join(refused[:10]))
        elif action == "group":
            group = MachineGroup.objects.filter(pk=posted_id(request.POST.get("group"))).first()
            if group is None:
                messages.error(request, "Choose the group to add them to.")
                return HttpResponseRedirect(back)
            services.update_machine_group(
                actor=request.user,  # type: ignore[arg-type]
                group=group,
                machines=[*group.machines.all(), *machines],
            )
            messages.success(request, f"{len(machines)} machine(s) added to {group.name}.")
        else:
            messages.error(request, "Choose what to do with the ticked machines.")
        return HttpResponseRedirect(back)


class MachineDetailView(RoleRequiredMixin, DetailView):
    template_name = "inventory/machine_detail.html"
    allowed_roles = ALL_ROLES
    context_object_name = "machine"

    def get_queryset(self) -> Any:
        # Out of scope looks exactly like "does not exist": 404, never 403.
        return (
            Machine.objects.visible_to(self.request.user)
            .select_related("source")
            .prefetch_related("disks", "groups")
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        from catalog.choices import PointKind
        from protection.models import Alert, AlertMachine, Assignment, Policy, ProtectionRule
        from protection.rules import evaluate
        from protection.states import state_of

        context = super().get_context_data(**kwargs)
        machine = self.object
        rules = list(ProtectionRule.objects.select_related("policy", "match_source"))
        points = list(machine.recovery_points.select_related("repository")[:20])
        context.update(
            assignment=Assignment.objects.filter(machine=machine)
            .select_related("policy", "rule", "assigned_by")
            .first(),
            decision=evaluate(machine, rules),
            history=MachineChange.objects.filter(machine=machine)[:50],
            alerts=[alert.message for alert in Alert.objects.open().filter(machine=machine)]
            + [
                f"{entry.alert.message}: {entry.cause}"
                for entry in AlertMachine.objects.filter(
                    machine=machine, alert__resolved_at__isnull=True
                ).select_related("alert")
            ],
            policies=Policy.objects.filter(enabled=True) if self.request.user.role == "admin" else [],  # type: ignore[union-attr]
            agent=Agent.objects.filter(machine=machine).first(),
            runs=list(machine.runs.all()[:10]),
            points=points,
            image_points=[point for point in points if point.kind == PointKind.IMAGE],
            protection=state_of(machine),
            # Rule names and criteria are admins' and auditors' to read.
            sees_rules=self.request.user.sees_all_machines,  # type: ignore[union-attr]
        )
        return context


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


# --- sources -----------------------------------------------------------------------------------------------------
class SourceListView(RoleRequiredMixin, TemplateView):
    template_name = "inventory/source_list.html"
    allowed_roles = ADMIN_ONLY

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["sources"] = (
            Source.objects.visible_to(self.request.user)
            .annotate(machine_count=Count("machines", filter=Q(machines__gone_since__isnull=True)))
            .order_by("name")
        )
        return context


class SourceCreateView(RoleRequiredMixin, FormView):
    template_name = "inventory/source_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = SourceForm

    def form_valid(self, form: SourceForm) -> HttpResponse:
        source = services.create_source(actor=self.request.user, **form.source_fields())  # type: ignore[arg-type]
        run = discovery.queue_discovery(source=source, actor=self.request.user)  # type: ignore[arg-type]
        messages.success(
            self.request, f"Source {source.name} added; its first discovery is queued (run {run.pk})."
        )
        return HttpResponseRedirect(reverse("source-detail", args=[source.pk]))


class SourceUpdateView(RoleRequiredMixin, ScopedObjectFormMixin, FormView):
    template_name = "inventory/source_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = SourceForm
    model = Source

    def form_valid(self, form: SourceForm) -> HttpResponse:
        fields = form.source_fields()
        fields.pop("kind", None)  # a source keeps its kind: machines and credentials depend on it
        services.update_source(actor=self.request.user, source=self.object, **fields)  # type: ignore[arg-type]
        messages.success(self.request, f"Source {self.object.name} saved.")
        return HttpResponseRedirect(reverse("source-detail", args=[self.object.pk]))


class SourceDetailView(RoleRequiredMixin, DetailView):
    template_name = "inventory/source_detail.html"
    allowed_roles = ADMIN_ONLY
    context_object_name = "source"

    def get_queryset(self) -> Any:
        return Source.objects.visible_to(self.request.user).select_related("credential")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        source = self.object
        context.update(
            runs=DiscoveryRun.objects.filter(source=source)[:20],
            present=source.machines.filter(gone_since__isnull=True).count(),
            topology=[
                (label.replace("_", " ").capitalize(), names) for label, names in source.topology.items()
            ],
            gone=source.machines.filter(gone_since__isnull=False).count(),
        )
        return context


class SourceTestView(RoleRequiredMixin, View):
    """POST: connect and log in now; answers a small fragment (HTMX) or redirects with a message."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        source = get_object_or_404(Source.objects.visible_to(request.user), pk=pk)
        try:
            result, ok = discovery.test_source(source), True
        except ConnectorError as error:
            result, ok = str(error), False
        if request.headers.get("HX-Request"):
            return render(request, "inventory/_test_result.html", {"ok": ok, "result": result})
        (messages.success if ok else messages.error)(
            request, f"{'Connected: ' if ok else 'Failed: '}{result}"
        )
        return HttpResponseRedirect(reverse("source-detail", args=[pk]))


class SourceTryView(RoleRequiredMixin, View):
    """POST the source form as it stands (not saved): connect and log in, and answer a fragment: connected, the
    reason it failed, or, for an untrusted certificate, its SHA-256 fingerprint with "Trust and continue"."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest) -> HttpResponse:
        from connectors.base import UntrustedCertificate
        from connectors.registry import connector_for
        from connectors.tls import pretty

        instance = None
        if request.POST.get("source_id", "").isdigit():
            instance = (
                Source.objects.visible_to(request.user).filter(pk=int(request.POST["source_id"])).first()
            )
        form = SourceForm(request.POST, instance=instance)
        context: dict[str, Any] = {"ok": False, "result": "", "fingerprint": ""}
        if not form.is_valid():
            problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
            context["result"] = f"fix the form first — {problems}"
            return render(request, "inventory/_test_result.html", context)
        try:
            endpoint = services.endpoint_for_form(form.source_fields(), instance=instance)
            context["result"], context["ok"] = connector_for(endpoint).test(), True
        except UntrustedCertificate as error:
            context["result"] = str(error)
            context["fingerprint"] = error.fingerprint
            context["pretty_fingerprint"] = pretty(error.fingerprint)
        except ConnectorError as error:
            context["result"] = str(error)
        return render(request, "inventory/_test_result.html", context)


class SourceDiscoverView(RoleRequiredMixin, View):
    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        source = get_object_or_404(Source.objects.visible_to(request.user), pk=pk)
        run = discovery.queue_discovery(source=source, actor=request.user)  # type: ignore[arg-type]
        messages.info(request, f"Discovery of {source.name} queued (run {run.pk}).")
        return HttpResponseRedirect(reverse("source-detail", args=[pk]))


# --- agents ------------------------------------------------------------------------------------------------------
class AgentListView(RoleRequiredMixin, FormView):
    """Enrolled agents and one-time enrolment tokens; a new token is shown once."""

    template_name = "inventory/agent_list.html"
    allowed_roles = ADMIN_ONLY
    form_class = EnrolmentTokenForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            agents=Agent.objects.visible_to(self.request.user)
            .select_related("machine")
            .order_by("machine__name"),
            tokens=EnrolmentToken.objects.visible_to(self.request.user)
            .select_related("machine")
            .prefetch_related("groups")[:50],
            server=self.request.build_absolute_uri("/").rstrip("/"),
        )
        return context

    def form_valid(self, form: EnrolmentTokenForm) -> HttpResponse:
        token, value = agents.create_enrolment_token(actor=self.request.user, **form.cleaned_data)  # type: ignore[arg-type]
        return self.render_to_response(
            self.get_context_data(form=EnrolmentTokenForm(), new_token=value, new_token_label=token.label)
        )
