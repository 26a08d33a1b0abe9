"""Pages of file restores out of image points: the wizard (what → which version → where → confirm), the restore
history with the approvals waiting, an admin's decision, the download of an approved restore, and a group's
restore rules."""

from __future__ import annotations

import itertools
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import ListView, TemplateView, UpdateView

from catalog import extract
from catalog.choices import EntryKind
from catalog.models import FileVersion, RecoveryPoint
from catalog.search import in_point, in_point_range
from core.access import ADMIN_ONLY, FILE_RESTORERS, RESTORE_READERS, RoleRequiredMixin, posted_id
from core.choices import CredentialKind, Role
from core.models import Credential
from core.streaming import streaming
from engine.errors import EngineError
from inventory.models import MachineGroup
from restores.file_restores import (
    FileRestoreRefused,
    check_limits,
    decide,
    download_rows,
    mark,
    request_file_restore,
    select,
    system_root,
)
from restores.models import Conflict, RestoreKind, RestoreRequest, RestoreRule, RestoreState, RestoreTarget
from restores.rules import limits_for
from restores.views import content_disposition


class FileRestoreWizardView(RoleRequiredMixin, TemplateView):
    """GET ?version=<id> (a file found by search) or ?point=&volume=&path= (an item of a point's catalog): choose
    the version, the target and what to do with existing files; POST reviews, POST with confirm=1 restores."""

    template_name = "restores/wizard.html"
    allowed_roles = FILE_RESTORERS

    def _item(self, data: Any) -> tuple[RecoveryPoint, str, str]:
        user = self.request.user
        points = RecoveryPoint.objects.visible_to(user).select_related("machine__source")
        if data.get("version"):
            version = get_object_or_404(
                FileVersion.objects.visible_to(user).select_related("path"), pk=posted_id(data.get("version"))
            )
            point = in_point_range(version, points).order_by("-taken_at").first()
            if point is None:
                raise Http404("no recovery point of yours holds this version")
            return point, version.volume, version.path.text
        point = get_object_or_404(points, pk=posted_id(data.get("point")))
        return point, str(data.get("volume", "")), "/" + str(data.get("path", "")).lstrip("/")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        data = self.request.POST if self.request.method == "POST" else self.request.GET
        point, volume, path = self._item(data)
        user = self.request.user
        machine = point.machine
        item = (
            in_point(FileVersion.objects.visible_to(user), point)
            .filter(volume=volume, path__text=path)
            .first()
        )
        if item is None:
            raise Http404("this recovery point holds no such file or folder")
        versions = []
        if item.kind != EntryKind.DIR:  # a file's history: each version, and the newest point that holds it
            rows = FileVersion.objects.visible_to(user).filter(
                machine=machine, volume=volume, path__text=path
            )
            visible = RecoveryPoint.objects.visible_to(user)
            previous = None
            for row in sorted(rows, key=lambda r: r.first_at):
                newest = in_point_range(row, visible).order_by("-taken_at").first()
                if newest is not None:
                    versions.append({"row": row, "point": newest, "changed": previous is not None})
                previous = row
            versions.reverse()
        limits = limits_for(user, machine)  # type: ignore[arg-type]
        vsphere = machine.platform == "vsphere" and machine.source_id is not None
        targets = [
            {
                "value": target.value,
                "label": target.label,
                "allowed": target.value in limits.targets
                and (target.value in (RestoreTarget.DOWNLOAD, RestoreTarget.SMB) or vsphere)
                and (target.value != RestoreTarget.IN_PLACE or system_root(point, volume) is not None),
            }
            for target in RestoreTarget
        ]
        context.update(
            point=point,
            machine=machine,
            volume=volume,
            path=path,
            item=item,
            versions=versions,
            limits=limits,
            targets=targets,
            vsphere=vsphere,
            conflicts=Conflict.choices,
            shares=Credential.objects.filter(kind=CredentialKind.SMB).order_by("name"),
            chosen={
                "target": data.get("target") or next((t["value"] for t in targets if t["allowed"]), ""),
                "folder": data.get("folder", ""),
                "smb_folder": data.get("smb_folder", ""),
                "smb_credential": posted_id(data.get("smb_credential"))
                if data.get("smb_credential")
                else None,
                "conflict": data.get("conflict") or Conflict.KEEP_BOTH,
            },
        )
        return context

    def post(self, request: HttpRequest) -> HttpResponse:
        context = self.get_context_data()
        point, chosen = context["point"], context["chosen"]
        try:
            if (
                request.POST.get("confirm") != "1"
            ):  # the review: what the restore would take, checked by the rules
                selection = select(request.user, point, context["volume"], [context["path"]])  # type: ignore[arg-type]
                check_limits(context["limits"], chosen["target"], selection)
                context.update(review=True, selection=selection)
                return self.render_to_response(context)
            restore = request_file_restore(  # selects and checks again itself, at the moment it queues
                actor=request.user,  # type: ignore[arg-type]
                point=point,
                volume=context["volume"],
                paths=[context["path"]],
                target=chosen["target"],
                folder=chosen["smb_folder"] if chosen["target"] == RestoreTarget.SMB else chosen["folder"],
                conflict=chosen["conflict"],
                smb_credential=chosen["smb_credential"],
            )
        except FileRestoreRefused as error:
            context["error"] = str(error)
            return self.render_to_response(context)
        if restore.kind == RestoreKind.DOWNLOAD and restore.state == RestoreState.QUEUED:
            return HttpResponseRedirect(reverse("restore-download", args=[restore.pk]))
        return HttpResponseRedirect(reverse("restore-detail", args=[restore.pk]))


class RestoreListView(RoleRequiredMixin, ListView):  # type: ignore[type-arg]
    """Every restore (admins, auditors) or one's own (help desk): who, what, when, target, bytes, time, result.
    Admins see the restores waiting for their approval first."""

    template_name = "restores/restore_list.html"
    allowed_roles = RESTORE_READERS
    paginate_by = 50

    def get_queryset(self) -> QuerySet[RestoreRequest]:
        user = self.request.user
        rows = RestoreRequest.objects.visible_to(user).select_related(
            "machine", "point", "requested_by", "decided_by"
        )
        if user.role == Role.HELPDESK:  # type: ignore[union-attr]
            rows = rows.filter(requested_by=user)
        state = self.request.GET.get("state", "")
        if state in RestoreState.values:
            rows = rows.filter(state=state)
        return rows

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        context["awaiting"] = (
            RestoreRequest.objects.filter(state=RestoreState.AWAITING_APPROVAL).select_related(
                "machine", "point", "requested_by"
            )
            if user.role == Role.ADMIN  # type: ignore[union-attr]
            else []
        )
        context["states"] = RestoreState.choices
        context["state"] = self.request.GET.get("state", "")
        return context


class RestoreDecisionView(RoleRequiredMixin, View):
    """POST decision=approve|refuse (+ reason): an admin's four-eyes decision on a held restore."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        restore = get_object_or_404(RestoreRequest.objects.visible_to(request.user), pk=pk)
        try:
            decide(
                actor=request.user,  # type: ignore[arg-type]
                request_id=restore.pk,
                approve=request.POST.get("decision") == "approve",
                reason=request.POST.get("reason", ""),
            )
        except FileRestoreRefused as error:
            messages.error(request, f"Cannot decide: {error}.")
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=False):
            back = reverse("restore-detail", args=[pk])  # never off this console: no open redirect
        return HttpResponseRedirect(back)


class RestoreDownloadView(RoleRequiredMixin, View):
    """GET: the files of a download restore that is queued (not held, or approved) or done, for the one who asked
    for it (or an admin): one file as itself, several as a tar."""

    allowed_roles = FILE_RESTORERS

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        restore = get_object_or_404(
            RestoreRequest.objects.visible_to(request.user).select_related("machine", "point__repository"),
            pk=pk,
            kind=RestoreKind.DOWNLOAD,
        )
        if restore.requested_by_id != request.user.pk and request.user.role != Role.ADMIN:  # type: ignore[union-attr]
            raise PermissionDenied("This download was asked for by someone else.")
        if restore.state not in (RestoreState.QUEUED, RestoreState.DONE):
            raise PermissionDenied(f"This restore is {restore.get_state_display().lower()}.")
        try:
            name, pieces, length = download_rows(restore)
            first = next(pieces, b"")
        except (FileRestoreRefused, extract.NotReadable) as error:
            raise Http404(str(error)) from None
        except (EngineError, OSError) as error:
            return HttpResponse(
                f"The recovery point cannot be read now: {error}", status=503, content_type="text/plain"
            )
        mark(restore, RestoreState.DONE, result={"downloaded_by": request.user.get_username()})
        headers = {
            "Content_Disposition": content_disposition(name),
            "Content_Type": "application/octet-stream",
        }
        if length is not None:
            headers["Content_Length"] = str(length)
        return streaming(request, itertools.chain([first], pieces), **headers)  # type: ignore[arg-type, return-value]


class RestoreRuleForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = RestoreRule
        fields = [
            "allow_in_place",
            "allow_other_folder",
            "allow_download",
            "extensions",
            "max_bytes",
            "requires_approval",
        ]
        labels = {
            "allow_in_place": "Back to the original location",
            "allow_other_folder": "Into another folder on the machine",
            "allow_download": "As a browser download",
            "allow_smb": "Into a folder of an SMB share",
            "extensions": "Only these file types",
            "max_bytes": "Size cap (bytes)",
            "requires_approval": "Four-eyes approval by an admin",
        }


class RestoreRuleEditView(RoleRequiredMixin, UpdateView):  # type: ignore[type-arg]
    """A group's restore rules, for the help-desk operators of its machines."""

    template_name = "restores/rule_form.html"
    allowed_roles = ADMIN_ONLY
    form_class = RestoreRuleForm

    def get_object(self, queryset: Any = None) -> RestoreRule:
        group = get_object_or_404(MachineGroup.objects.all(), pk=self.kwargs["pk"])
        return RestoreRule.objects.filter(group=group).first() or RestoreRule(group=group)

    def form_valid(self, form: RestoreRuleForm) -> HttpResponse:
        from core import audit

        rule = form.save()
        audit.record(
            "restore_rule.save",
            actor=self.request.user,  # type: ignore[arg-type]
            target=rule.group,
            after={field: form.cleaned_data[field] for field in form.Meta.fields},
        )
        messages.success(self.request, f"Restore rules of {rule.group.name} saved.")
        return HttpResponseRedirect(reverse("group-list"))


DIFF_CAP = 1024 * 1024  # bytes per version: a larger file is downloaded, not compared in the page


class FileDiffView(RoleRequiredMixin, TemplateView):
    """GET ?v=<id>&v=<id>: two versions of a text file side by side, line by line (difflib), each read out of its
    backup like a download (the restore rules apply, and it is audited as one)."""

    template_name = "restores/file_diff.html"
    allowed_roles = FILE_RESTORERS

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        import difflib

        from catalog import repositories
        from restores.services import record_download
        from restores.views import download_refusal

        context = super().get_context_data(**kwargs)
        user = self.request.user
        chosen = [posted_id(value) for value in self.request.GET.getlist("v")[:2]]
        visible = FileVersion.objects.visible_to(user).select_related("path", "machine")
        versions = sorted(
            (get_object_or_404(visible, pk=pk) for pk in dict.fromkeys(chosen)), key=lambda row: row.first_at
        )
        if len(versions) != 2 or len({(v.machine_id, v.volume, v.path_id) for v in versions}) != 1:
            raise Http404("choose two versions of the same file")
        texts: list[list[str]] = []
        points = RecoveryPoint.objects.visible_to(user)
        for version in versions:
            refusal = download_refusal(user, version)  # type: ignore[arg-type]
            if refusal:
                raise PermissionDenied(refusal)
            if version.size > DIFF_CAP:
                context["error"] = (
                    f"{version.path.name} is larger than 1 MB in one of the versions: download them."
                )
                break
            point = in_point_range(version, points).order_by("-taken_at").select_related("repository").first()
            if point is None:
                raise Http404("no recovery point of yours holds this version")
            data = b"".join(extract.file_bytes(*repositories.open_point(point), version))
            record_download(actor=user, point=point, paths=[version.path.text])  # type: ignore[arg-type]
            if b"\0" in data[:8192]:
                context["error"] = "These versions hold binary data, which is not compared line by line."
                context["same"] = None
                break
            texts.append(data.decode("utf-8", errors="replace").splitlines())
        if len(texts) == 2:
            older, newer = versions
            context["same"] = texts[0] == texts[1]
            context["table"] = difflib.HtmlDiff(tabsize=4, wrapcolumn=100).make_table(
                texts[0],
                texts[1],
                f"{older.first_at:%Y-%m-%d %H:%M}",
                f"{newer.first_at:%Y-%m-%d %H:%M}",
                context=True,
                numlines=3,
            )
        context.update(versions=versions, version=versions[0])
        return context
