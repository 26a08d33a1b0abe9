from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from catalog import extract, files, repositories
from catalog.choices import PointKind
from catalog.models import FileVersion, RecoveryPoint
from catalog.search import in_point_range
from catalog.views import visible_point
from core.access import ADMIN_ONLY, ALL_ROLES, FILE_RESTORERS, RoleRequiredMixin, posted_id
from core.models import User
from core.streaming import streaming
from engine.errors import EngineError
from restores.file_restores import FileRestoreRefused, Selection, check_limits
from restores.models import RestoreKind, RestoreRequest, RestoreTarget
from restores.rules import limits_for
from restores.services import RestoreRefused, record_download, request_restore


class MachineRestoreView(RoleRequiredMixin, View):
    """POST from the machine page: restore a recovery point to image files or as a new VM."""

    allowed_roles = ADMIN_ONLY

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        point = get_object_or_404(
            RecoveryPoint.objects.visible_to(request.user),
            pk=posted_id(request.POST.get("point")),
            machine_id=pk,
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


class FileDownloadView(RoleRequiredMixin, View):
    """GET ?point=<id>: one catalogued file, streamed as itself out of an image point (or a file point) of the
    machine, reading only its data. The point defaults to the newest one that holds this version."""

    allowed_roles = FILE_RESTORERS

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = get_object_or_404(
            FileVersion.objects.visible_to(request.user).select_related("path", "machine"), pk=pk
        )
        points = in_point_range(version, RecoveryPoint.objects.visible_to(request.user))
        chosen = posted_id(request.GET.get("point")) if request.GET.get("point") else None
        point = (
            (points.filter(pk=chosen) if chosen else points.order_by("-taken_at"))
            .select_related("repository__passphrase")
            .first()
        )
        if point is None:
            raise Http404("no recovery point of yours holds this version")
        refusal = download_refusal(request.user, version)  # type: ignore[arg-type]
        if refusal:
            raise PermissionDenied(refusal)
        try:
            engine, snapshot = repositories.open_point(point)
            pieces = (
                files.file_pieces(engine, snapshot, version.path.text)
                if point.kind == PointKind.FILES
                else extract.file_bytes(engine, snapshot, version)
            )
            first = next(pieces, b"")
        except (extract.NotReadable, files.NotFound) as error:
            raise Http404(str(error)) from None
        except (EngineError, OSError) as error:
            return HttpResponse(
                f"The recovery point cannot be read now: {error}", status=503, content_type="text/plain"
            )
        record_download(actor=request.user, point=point, paths=[version.path.text])  # type: ignore[arg-type]
        return streaming(  # type: ignore[return-value]
            request,  # type: ignore[arg-type]
            itertools.chain([first], pieces),
            Content_Disposition=content_disposition(version.path.name),
            Content_Type="application/octet-stream",
            Content_Length=str(version.size),
        )


def download_refusal(user: User, version: FileVersion) -> str:
    """Why the machine's restore rules forbid this direct download ('' when they allow it): the same check as a
    download restore's (targets, extensions, cap), and a held machine's files go through the wizard instead."""
    limits = limits_for(user, version.machine)
    try:
        check_limits(
            limits, RestoreTarget.DOWNLOAD, Selection(rows=[("", version)], files=1, bytes=version.size)
        )
    except FileRestoreRefused as error:
        return f"Cannot download: {error}."
    if limits.approval:
        return "Restores from this machine need an admin's approval: ask for it with the restore wizard."
    return ""


def content_disposition(name: str) -> str:
    """RFC 6266: an ASCII fallback name, and the real one in UTF-8 (RFC 5987) for browsers that read it."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class PointDownloadView(RoleRequiredMixin, View):
    """GET ?path=a&path=b: the chosen files and folders as a tar archive, streamed."""

    allowed_roles = FILE_RESTORERS

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        point = visible_point(request, pk)
        if point.kind != PointKind.FILES:
            raise Http404("this recovery point holds disk images, not files")
        engine, snapshot = repositories.open_point(point)
        try:
            cleaned = files.checked_paths(engine, snapshot, request.GET.getlist("path"))
        except files.NotFound as error:
            raise Http404(str(error)) from None
        record_download(actor=request.user, point=point, paths=cleaned)  # type: ignore[arg-type]
        name = f"{point.machine.name}-{point.taken_at:%Y%m%d-%H%M}.tar".replace(" ", "_")
        return streaming(  # type: ignore[return-value]
            request,  # type: ignore[arg-type]
            files.tar_stream(engine, snapshot, cleaned),
            Content_Disposition=f'attachment; filename="{name}"',
        )


class PointRestoreFilesView(RoleRequiredMixin, View):
    """POST: restore the chosen paths to a folder on the machine's own host, through its agent."""

    allowed_roles = FILE_RESTORERS

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        point = visible_point(request, pk)
        here = reverse("point-files", args=[pk])
        try:
            restore = request_restore(
                actor=request.user,  # type: ignore[arg-type]
                point=point,
                kind=RestoreKind.FILES_TO_AGENT,
                target=request.POST.get("target", "").strip() or "/",
                paths=request.POST.getlist("path"),
            )
        except RestoreRefused as error:
            messages.error(request, f"Cannot restore: {error}.")
            return HttpResponseRedirect(here)
        return HttpResponseRedirect(reverse("restore-detail", args=[restore.pk]))
