"""The catalog over the API: search files across machines, browse a point folder by folder, a file's versions.

Admins, auditors (read-only) and help-desk operators, each within `visible_to`: a machine outside one's scope
answers as if it did not exist (404 for a point or a version, nothing in a search).
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.choices import EntryKind
from catalog.models import FileVersion, RecoveryPoint
from catalog.search import FileQuery, describe, in_point, search
from core.choices import Role

READERS = frozenset({Role.ADMIN, Role.AUDITOR, Role.HELPDESK})


class ReadsCatalog(BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.role in READERS)


class SearchQuery(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    glob = serializers.CharField(required=False, allow_blank=True, max_length=255)
    path = serializers.CharField(required=False, allow_blank=True, max_length=4096)
    kind = serializers.ChoiceField(choices=EntryKind.choices, required=False)
    size_min = serializers.IntegerField(required=False, min_value=0, max_value=2**62)
    size_max = serializers.IntegerField(required=False, min_value=0, max_value=2**62)
    modified_after = serializers.DateTimeField(required=False)
    modified_before = serializers.DateTimeField(required=False)
    machine = serializers.IntegerField(required=False, min_value=1, max_value=2**62)
    point = serializers.IntegerField(required=False, min_value=1, max_value=2**62)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if not any(
            data.get(key) not in (None, "") for key in ("name", "glob", "path", "kind", "machine", "point")
        ):
            raise serializers.ValidationError("give a name, a pattern, a path, a type, a machine or a point")
        return data


class VersionOut(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.IntegerField()
    size = serializers.IntegerField()
    kind = serializers.CharField()
    modified = serializers.DateTimeField(allow_null=True)
    first_point = serializers.IntegerField()
    last_point = serializers.IntegerField()
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    link_target = serializers.CharField(allow_blank=True)


class FileOut(serializers.Serializer):  # type: ignore[type-arg]
    machine = serializers.IntegerField()
    machine_name = serializers.CharField()
    volume = serializers.CharField()
    path = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    versions = VersionOut(many=True)


class SearchOut(serializers.Serializer):  # type: ignore[type-arg]
    results = FileOut(many=True)


class EntryOut(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField()
    path = serializers.CharField()
    volume = serializers.CharField()
    version = VersionOut()


class BrowseOut(serializers.Serializer):  # type: ignore[type-arg]
    point = serializers.IntegerField()
    path = serializers.CharField()
    catalog_state = serializers.CharField()
    entries = EntryOut(many=True)


class VersionsOut(serializers.Serializer):  # type: ignore[type-arg]
    machine = serializers.IntegerField()
    volume = serializers.CharField()
    path = serializers.CharField()
    versions = VersionOut(many=True)


class CatalogSearchView(APIView):
    permission_classes = [ReadsCatalog]

    @extend_schema(parameters=[SearchQuery], responses=SearchOut)
    def get(self, request: Request) -> Response:
        """Files by name, pattern, path, size, time, type, machine or point, in your scope, with their versions."""
        given = SearchQuery(data=request.query_params)
        given.is_valid(raise_exception=True)
        data = dict(given.validated_data)
        limit = data.pop("limit", 100)
        point = None
        if data.get("point"):
            point = get_object_or_404(RecoveryPoint.objects.visible_to(request.user), pk=data.pop("point"))
        else:
            data.pop("point", None)
        return Response({"results": search(request.user, FileQuery(**data, point=point), limit=limit)})


class BrowseQuery(serializers.Serializer):  # type: ignore[type-arg]
    path = serializers.CharField(required=False, allow_blank=True, max_length=4096, default="/")
    volume = serializers.CharField(required=False, allow_blank=True, max_length=200)


class PointBrowseView(APIView):
    permission_classes = [ReadsCatalog]

    @extend_schema(parameters=[BrowseQuery], responses=BrowseOut)
    def get(self, request: Request, pk: int) -> Response:
        """One folder of a recovery point, as the catalog recorded it (no mount, nothing read from the image)."""
        point = get_object_or_404(RecoveryPoint.objects.visible_to(request.user), pk=pk)
        given = BrowseQuery(data=request.query_params)
        given.is_valid(raise_exception=True)
        folder = "/" + given.validated_data["path"].strip("/")
        rows = in_point(FileVersion.objects.visible_to(request.user), point).filter(parent__text=folder)
        if given.validated_data.get("volume"):
            rows = rows.filter(volume=given.validated_data["volume"])
        rows = rows.exclude(path__text=folder).select_related("path").order_by("volume", "path__name")[:5000]
        entries = [
            {"name": row.path.name, "path": row.path.text, "volume": row.volume, "version": describe(row)}
            for row in rows
        ]
        return Response(
            {"point": point.pk, "path": folder, "catalog_state": point.catalog_state, "entries": entries}
        )


class FileVersionsView(APIView):
    permission_classes = [ReadsCatalog]

    @extend_schema(responses=VersionsOut, parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH)])
    def get(self, request: Request, pk: int) -> Response:
        """Every version of the file this version belongs to (same machine, volume and path), newest first."""
        visible = FileVersion.objects.visible_to(request.user)
        version = get_object_or_404(visible.select_related("path"), pk=pk)
        rows = visible.filter(
            machine_id=version.machine_id, volume=version.volume, path_id=version.path_id
        ).order_by("-last_at")
        return Response(
            {
                "machine": version.machine_id,
                "volume": version.volume,
                "path": version.path.text,
                "versions": [describe(row) for row in rows],
            }
        )
