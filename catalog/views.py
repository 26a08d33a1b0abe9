"""Browsing what a recovery point holds, folder by folder (restoring it is the restores app's job)."""

from __future__ import annotations

import datetime
import stat
from typing import Any

from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.generic import TemplateView

from catalog import files, repositories
from catalog.choices import PointKind
from catalog.models import RecoveryPoint
from core.access import FILE_RESTORERS, RoleRequiredMixin
from engine.errors import EngineError

TYPE_BITS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK}


def visible_point(request: HttpRequest, pk: int) -> RecoveryPoint:
    """A recovery point the user may see (404 otherwise: an id outside one's scope does not exist)."""
    point = get_object_or_404(
        RecoveryPoint.objects.visible_to(request.user).select_related("machine", "repository__passphrase"),
        pk=pk,
    )
    return point


class PointFilesView(RoleRequiredMixin, TemplateView):
    """Browse a file recovery point folder by folder; choose files to download or to restore to the host."""

    template_name = "catalog/point_files.html"
    allowed_roles = FILE_RESTORERS

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        point = visible_point(self.request, self.kwargs["pk"])
        path = "/".join(part for part in self.request.GET.get("path", "").split("/") if part)
        context.update(point=point, machine=point.machine, path=path, entries=[], error="")
        parts = path.split("/") if path else []
        context["crumbs"] = [("/".join(parts[: i + 1]), part) for i, part in enumerate(parts)]
        if point.kind != PointKind.FILES:
            context["error"] = "This recovery point holds disk images; restore it from the machine's page."
            return context
        try:
            entries = files.list_folder(*repositories.open_point(point), path)
        except files.NotFound as error:
            raise Http404(str(error)) from None
        except (EngineError, OSError) as error:
            context["error"] = f"The recovery point cannot be read: {error}"
            return context
        context["entries"] = [
            {
                **entry,
                "path": f"{path}/{entry['name']}" if path else entry["name"],
                "modified": datetime.datetime.fromtimestamp(
                    int(entry.get("mtime_ns", 0)) / 1e9, tz=datetime.UTC
                ),
                "permissions": stat.filemode(TYPE_BITS.get(entry["type"], 0) | int(entry.get("mode", 0))),
            }
            for entry in entries
        ]
        return context
