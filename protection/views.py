from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views import View
from django.views.generic import FormView, TemplateView

from catalog.models import Repository
from catalog.services import RepositoryRefused, create_repository
from core.access import ADMIN_ONLY, ALL_ROLES, RoleRequiredMixin, posted_id, posted_ids
from inventory.models import Machine
from protection import services
from protection.backup import BackupRefused, back_up_now, cancel_run, start_backup
from protection.choices import ACTIVE_RUN_STATES, RunState
from protection.filters import AlertFilter
from protection.forms import AssignForm, CopyTargetForm, PolicyForm, RepositoryForm, RuleForm
from protection.models import Alert, BackupRun, CopyTarget, Policy, ProtectionRule
from protection.querysets import visible_entries
from protection.states import upcoming_runs


class PolicyListView(RoleRequiredMixin, TemplateView):
    template_name = "protection/policy_list.html"
    allowed_roles = ADMIN_ONLY

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        policies = list(
            Policy.objects.visible_to(self.request.user)
            .select_related("repository")
            .annotate(machines=Count("assignments"))
        )
        upcoming = upcoming_runs(policies, Machine.objects.visible_to(self.request.user))
        for policy in policies:
            policy.next_run = upcoming[policy.pk].at  # type: ignore[attr-defined]
        context["policies"] = policies
        return context


class PolicyFormView(RoleRequiredMixin, FormView):
    template_name = "protection/policy_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = PolicyForm

    def get_object(self) -> Policy | None:
        pk = self.kwargs.get("pk")
        return get_object_or_404(Policy.objects.visible_to(self.request.user), pk=pk) if pk else None

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "instance": self.get_object()}

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        policy = self.get_object()
        if policy is not None:
            context["copy_targets"] = policy.copy_targets.select_related("repository")
            context["copy_form"] = CopyTargetForm(policy=policy)
        return context

    def form_valid(self, form: PolicyForm) -> HttpResponse:
        fields = {name: form.cleaned_data[name] for name in PolicyForm.Meta.fields}
        policy = self.get_object()
        if policy is None:
            policy = services.create_policy(actor=self.request.user, name=fields.pop("name"))  # type: ignore[arg-type]
        services.update_policy(actor=self.request.user, policy=policy, **fields)  # type: ignore[arg-type]
        services.set_guest_login(
            actor=self.request.user,  # type: ignore[arg-type]
            policy=policy,
            username=form.cleaned_data["guest_username"].strip(),
            password=form.cleaned_data["guest_password"] or None,
        )
        if policy.repository_id is None:
            messages.warning(
                self.request,
                f"Policy {policy.name} saved as a draft: it has no repository, so it cannot run and its machines "
                "show as at risk. Create a repository under Storage, then pick it here.",
            )
        else:
            messages.success(self.request, f"Policy {policy.name} saved.")
        return HttpResponseRedirect(reverse("policy-list"))


class PolicyCopyTargetView(RoleRequiredMixin, View):
    """POST: add a copy target to the policy (or, with `remove`, take one away)."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        policy = get_object_or_404(Policy.objects.visible_to(request.user), pk=pk)
        here = reverse("policy-edit", args=[pk]) + "#copies"
        if request.POST.get("remove"):
            target = get_object_or_404(CopyTarget, pk=posted_id(request.POST["remove"]), policy=policy)
            services.remove_copy_target(actor=request.user, target=target)  # type: ignore[arg-type]
            messages.success(request, f"{policy.name} no longer copies to {target.repository.name}.")
            return HttpResponseRedirect(here)
        form = CopyTargetForm(request.POST, policy=policy)
        if form.is_valid():
            data = dict(form.cleaned_data)
            repository = data.pop("repository")
            try:
                services.add_copy_target(actor=request.user, policy=policy, repository=repository, **data)  # type: ignore[arg-type]
            except services.CopyTargetRefused as error:
                messages.error(request, f"Cannot add the copy: {error}.")
                return HttpResponseRedirect(here)
            messages.success(request, f"{policy.name} now copies every recovery point to {repository.name}.")
            return HttpResponseRedirect(here)
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
        messages.error(request, f"Cannot add the copy: {problems}")
        return HttpResponseRedirect(here)


class RuleListView(RoleRequiredMixin, TemplateView):
    template_name = "protection/rule_list.html"
    allowed_roles = ADMIN_ONLY

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["rules"] = (
            ProtectionRule.objects.visible_to(self.request.user)
            .select_related("policy", "match_source")
            .annotate(machines=Count("assignments"))
        )
        context["unprotected"] = services.unprotected_machines().count()
        return context


class RuleFormView(RoleRequiredMixin, FormView):
    template_name = "protection/rule_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = RuleForm

    def get_object(self) -> ProtectionRule | None:
        pk = self.kwargs.get("pk")
        return get_object_or_404(ProtectionRule.objects.visible_to(self.request.user), pk=pk) if pk else None

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "instance": self.get_object()}

    def form_valid(self, form: RuleForm) -> HttpResponse:
        fields = {name: form.cleaned_data[name] for name in RuleForm.Meta.fields}
        rule = self.get_object()
        if rule is None:
            rule = services.create_rule(actor=self.request.user, **fields)  # type: ignore[arg-type]
        else:
            services.update_rule(actor=self.request.user, rule=rule, **fields)  # type: ignore[arg-type]
        messages.success(self.request, f"Rule {rule.name} saved and applied to every machine.")
        return HttpResponseRedirect(reverse("rule-list"))


class RulePreviewView(RoleRequiredMixin, View):
    """POST the rule form: which machines it would match (a dry run; nothing is saved)."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        instance = get_object_or_404(ProtectionRule, pk=pk) if pk else None
        form = RuleForm(request.POST, instance=instance)
        context: dict[str, Any] = {"form": form}
        if form.is_valid():
            rule = form.save(commit=False)
            if rule.position is None:
                rule.position = 10**9
            matches = services.dry_run(rule, Machine.objects.present().select_related("source"))
            context.update(matches=matches[:200], count=len(matches))
        return render(request, "protection/_rule_preview.html", context)


class RuleMoveView(RoleRequiredMixin, View):
    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        rule = get_object_or_404(ProtectionRule.objects.visible_to(request.user), pk=pk)
        services.move_rule(
            actor=request.user, rule=rule, direction=-1 if request.POST.get("direction") == "up" else 1
        )  # type: ignore[arg-type]
        return HttpResponseRedirect(reverse("rule-list"))


class RuleDeleteView(RoleRequiredMixin, View):
    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        rule = get_object_or_404(ProtectionRule.objects.visible_to(request.user), pk=pk)
        services.delete_rule(actor=request.user, rule=rule)  # type: ignore[arg-type]
        messages.success(
            request,
            f"Rule {rule.name} deleted; the machines it assigned keep their policy unless another rule decides.",
        )
        return HttpResponseRedirect(reverse("rule-list"))


class AlertListView(RoleRequiredMixin, TemplateView):
    template_name = "protection/alert_list.html"
    allowed_roles = ALL_ROLES

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        alerts = Alert.objects.visible_to(user).select_related("machine", "source", "acknowledged_by")
        query = self.request.GET.copy()
        query.setdefault("state", "open")  # the page opens on what needs attention
        alert_filter = AlertFilter(query, queryset=alerts, request=self.request)
        page = Paginator(alert_filter.qs, 50).get_page(self.request.GET.get("page"))
        for alert in page:
            entries = visible_entries(alert, user)
            alert.visible_count = entries.count()  # type: ignore[attr-defined]
            alert.visible_entries = list(entries[:200])  # type: ignore[attr-defined]
        context.update(filter=alert_filter, page=page, state=query.get("state"))
        return context


class AlertAcknowledgeView(RoleRequiredMixin, View):
    """POST: acknowledge an alert (audited); it stays open until its condition is over."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        alert = get_object_or_404(Alert.objects.visible_to(request.user), pk=pk)
        services.acknowledge_alert(actor=request.user, alert=alert)  # type: ignore[arg-type]
        messages.success(request, "Alert acknowledged.")
        query = request.POST.get("query", "").lstrip("?")  # back to the same filtered list, on this site only
        return HttpResponseRedirect(reverse("alert-list") + (f"?{query}" if query else ""))


class MachineAssignView(RoleRequiredMixin, View):
    """POST from the machine page: an admin assigns a policy by hand (or hands the machine back to the rules)."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        machine = get_object_or_404(Machine.objects.visible_to(request.user), pk=pk)
        form = AssignForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose a policy from the list.")
        else:
            services.assign_policy(
                actor=request.user,  # type: ignore[arg-type]
                machine=machine,
                policy=form.cleaned_data["policy"],
                reason=form.cleaned_data["reason"],
            )
            messages.success(request, "Protection updated.")
        return HttpResponseRedirect(reverse("machine-detail", args=[pk]))


# --- runs ------------------------------------------------------------------------------------------------------
class RunListView(RoleRequiredMixin, TemplateView):
    template_name = "protection/run_list.html"
    allowed_roles = ALL_ROLES

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        runs = BackupRun.objects.visible_to(self.request.user).select_related(
            "machine", "policy", "repository"
        )
        state = self.request.GET.get("state", "")
        if state == "queued":
            runs = runs.filter(state__in=[RunState.QUEUED, RunState.WAITING])
        elif state:
            runs = runs.filter(state=state)
        context.update(page=Paginator(runs, 50).get_page(self.request.GET.get("page")), state=state)
        # What the schedules start next, for the machines this reader may see (soonest first).
        upcoming = upcoming_runs(
            Policy.objects.visible_to(self.request.user).filter(enabled=True, repository__isnull=False),
            Machine.objects.visible_to(self.request.user),
        )
        context["upcoming"] = sorted(
            (u for u in upcoming.values() if u.at is not None and u.machines), key=lambda u: u.at
        )[:5]
        return context


class PolicyBackupView(RoleRequiredMixin, View):
    """POST: back up now every machine under this policy (its window does not apply to a person's request)."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        policy = get_object_or_404(Policy.objects.visible_to(request.user), pk=pk)
        machines = Machine.objects.present().filter(assignment__policy=policy, template=False)
        queued, refused = back_up_now(machines=machines, requested_by=request.user)  # type: ignore[arg-type]
        messages.success(request, f"{queued} backup(s) of {policy.name} queued.")
        if refused:
            messages.error(request, "Not queued — " + "; ".join(refused[:10]))
        return HttpResponseRedirect(reverse("policy-list"))


class RunBulkCancelView(RoleRequiredMixin, View):
    """POST: cancel the ticked runs (or every queued run of the list) at once."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest) -> HttpResponse:
        runs = BackupRun.objects.visible_to(request.user).filter(state__in=ACTIVE_RUN_STATES)
        if request.POST.get("all_queued"):
            runs = runs.filter(state__in=[RunState.QUEUED, RunState.WAITING])
        else:
            runs = runs.filter(pk__in=posted_ids(request.POST.getlist("runs")))
        cancelled = 0
        for run in runs.select_related("machine"):
            cancel_run(run=run, actor=request.user)  # type: ignore[arg-type]
            cancelled += 1
        messages.success(request, f"{cancelled} run(s) cancelled." if cancelled else "No run to cancel.")
        return HttpResponseRedirect(reverse("run-list") + "?state=" + request.POST.get("state", ""))


class RunDetailView(RoleRequiredMixin, TemplateView):
    template_name = "protection/run_detail.html"
    allowed_roles = ALL_ROLES

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        run = get_object_or_404(
            BackupRun.objects.visible_to(self.request.user).select_related(
                "machine", "policy", "repository", "proxy"
            ),
            pk=self.kwargs["pk"],
        )
        context.update(run=run, active=run.state in ACTIVE_RUN_STATES)
        return context


def run_status(run: BackupRun) -> dict[str, Any]:
    return {
        "run": run.pk,
        "state": run.state,
        "phase": run.phase,
        "disk": run.current_disk,
        "done": run.bytes_done,
        "total": run.bytes_total,
        "rate": round(run.rate),
        "eta": round(run.eta_seconds) if run.eta_seconds is not None else None,
        "new": run.bytes_new,
        "stored": run.bytes_stored,
        "error": run.error,
    }


class RunStatusView(RoleRequiredMixin, View):
    """JSON the run page polls when its WebSocket is down."""

    allowed_roles = ALL_ROLES

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = get_object_or_404(BackupRun.objects.visible_to(request.user), pk=pk)
        return JsonResponse(run_status(run))


class RunCancelView(RoleRequiredMixin, View):
    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = get_object_or_404(BackupRun.objects.visible_to(request.user), pk=pk)
        cancel_run(run=run, actor=request.user)  # type: ignore[arg-type]
        messages.info(request, "Cancel requested.")
        return HttpResponseRedirect(reverse("run-detail", args=[pk]))


class MachineBackupView(RoleRequiredMixin, View):
    """POST from the machine page: back it up now under its policy."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        machine = get_object_or_404(Machine.objects.visible_to(request.user), pk=pk)
        try:
            run = start_backup(machine=machine, requested_by=request.user)  # type: ignore[arg-type]
        except BackupRefused as error:
            messages.error(request, f"Cannot back up: {error}.")
            return HttpResponseRedirect(reverse("machine-detail", args=[pk]))
        return HttpResponseRedirect(reverse("run-detail", args=[run.pk]))


class RepositoryListView(RoleRequiredMixin, FormView):
    """Repositories, and a form to add one (its engine format and keys are created at once)."""

    template_name = "protection/repository_list.html"
    allowed_roles = ADMIN_ONLY
    form_class = RepositoryForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["repositories"] = Repository.objects.visible_to(self.request.user).annotate(
            points=Count("recovery_points")
        )
        return context

    def form_valid(self, form: RepositoryForm) -> HttpResponse:
        data = form.cleaned_data
        try:
            create_repository(
                actor=self.request.user,  # type: ignore[arg-type]
                name=data["name"],
                kind=data["kind"],
                path=data["path"],
                endpoint=data["endpoint"],
                access_key=data["access_key"] if data["kind"] == "s3" else "",
                secret_key=data["secret_key"] if data["kind"] == "s3" else "",
                tier=data["tier"],
                site=data["site"],
                jurisdiction=data["jurisdiction"],
                immutable_days=data["immutable_days"],
            )
        except RepositoryRefused as error:
            form.add_error(None, str(error))
            return self.form_invalid(form)
        messages.success(self.request, f"Repository {data['name']} created.")
        return HttpResponseRedirect(reverse("repository-list"))
