"""Browsing what a recovery point holds, folder by folder (restoring it is the restores app's job)."""

from __future__ import annotations

import datetime
import stat
from typing import Any

from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.generic import TemplateView

from catalog import extract, files, repositories
from catalog.choices import CatalogState, EntryKind, PointKind
from catalog.models import FileVersion, RecoveryPoint
from catalog.search import FileQuery, in_point, moment, search
from core.access import FILE_RESTORERS, RoleRequiredMixin, posted_id
from engine.errors import EngineError
from inventory.models import Machine

TYPE_BITS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "hardlink": stat.S_IFREG, "symlink": stat.S_IFLNK}


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
            return self._from_catalog(context, point, path)
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

    def _from_catalog(self, context: dict[str, Any], point: RecoveryPoint, path: str) -> dict[str, Any]:
        """An image point, browsed from its catalog: its volumes first, then folder by folder (nothing is read
        from the image until a file is downloaded)."""
        volume = self.request.GET.get("volume", "")
        context.update(image=True, volume=volume, volumes=point.catalog_volumes)
        if point.catalog_state in (CatalogState.PENDING, CatalogState.RUNNING):
            context["error"] = "The files of this point are being catalogued; try again in a few minutes."
            return context
        if point.catalog_state in (CatalogState.FAILED, CatalogState.NONE) and not point.catalog_entries:
            context["error"] = (
                "The files of this point are not catalogued"
                + (f": {point.catalog_detail}" if point.catalog_detail else ".")
                + " The whole disks can still be restored from the machine's page."
            )
            return context
        if not volume:
            return context
        folder = "/" + path
        rows = (
            in_point(FileVersion.objects.visible_to(self.request.user), point)
            .filter(volume=volume, parent__text=folder)
            .exclude(path__text=folder)
            .select_related("path")
            .order_by("-kind", "path__name")[:5000]
        )
        context["entries"] = [
            {
                "name": row.path.name,
                "path": row.path.text.lstrip("/"),
                "type": "dir" if row.kind == EntryKind.DIR else row.kind,
                "target": row.link_target,
                "size": row.size,
                "version": row.pk,
                "readable": extract.readable(row),
                "modified": moment(row.mtime_ns),
                "permissions": stat.filemode(TYPE_BITS.get(row.kind, 0) | row.mode),
            }
            for row in rows
        ]
        return context


class FileSearchView(RoleRequiredMixin, TemplateView):
    """Find a file by name, pattern or folder across every machine one may see, with its versions."""

    template_name = "catalog/file_search.html"
    allowed_roles = FILE_RESTORERS

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        data = self.request.GET
        machines = Machine.objects.visible_to(self.request.user).order_by("sort_name")
        context.update(machines=machines, query=data, results=None, error="")
        name, pattern, folder = (
            data.get("name", "").strip(),
            data.get("glob", "").strip(),
            data.get("path", "").strip(),
        )
        machine = posted_id(data.get("machine")) if data.get("machine") else None
        if not (name or pattern or folder):
            return context
        # Another scope's machine finds nothing, as one that does not exist: the search is scoped itself.
        query = FileQuery(name=name[:255], glob=pattern[:255], path=folder[:4096], machine=machine)
        results = search(self.request.user, query, limit=100)
        for found in results:
            folder_of = found["path"].rsplit("/", 1)[0].lstrip("/")
            found["browse"] = {
                "point": found["versions"][0]["last_point"],
                "volume": found["volume"],
                "path": folder_of,
            }
        context["results"] = results
        return context


class FileHistoryView(RoleRequiredMixin, TemplateView):
    """One file's versions on its machine side by side: size, modification time, the backups each was in, and
    whether its content changed from the version before; pick two text versions to compare."""

    template_name = "catalog/file_history.html"
    allowed_roles = FILE_RESTORERS

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        visible = FileVersion.objects.visible_to(self.request.user).select_related("path", "machine")
        version = get_object_or_404(visible, pk=self.kwargs["pk"])
        rows = list(
            visible.filter(machine=version.machine, volume=version.volume, path=version.path).order_by(
                "first_at"
            )
        )
        history = []
        for index, row in enumerate(rows):
            before = rows[index - 1] if index else None
            history.append(
                {
                    "row": row,
                    "changed": before is not None and before.signature != row.signature,
                    "grew": row.size - before.size if before is not None else None,
                    "readable": extract.readable(row),
                }
            )
        history.reverse()
        context.update(version=version, history=history, machine=version.machine)
        return context
