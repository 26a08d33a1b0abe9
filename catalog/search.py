"""Finding files across every machine a user may see: by name (substring or glob), path prefix, size, time, type,
machine and point; results grouped by file, each with its versions.

Name substrings use the trigram indexes of migration 0007: pg_trgm GIN on PostgreSQL (ILIKE uses it), FTS5 with
the trigram tokenizer on SQLite (for three characters or more; shorter ones scan the names).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL

from catalog.models import FileVersion, PathName, RecoveryPoint


@dataclass
class FileQuery:
    name: str = ""  # a substring of the file's name
    glob: str = ""  # a shell pattern for the name: *.pdf, report-202?.xlsx
    path: str = ""  # a path prefix: /home/alice
    kind: str = ""
    size_min: int | None = None
    size_max: int | None = None
    modified_after: datetime.datetime | None = None
    modified_before: datetime.datetime | None = None
    machine: int | None = None
    point: RecoveryPoint | None = None  # only what this point holds


def names_matching(text: str) -> QuerySet[PathName]:
    if connection.vendor == "sqlite" and len(text) >= 3:
        quoted = '"' + text.replace('"', '""') + '"'
        return PathName.objects.filter(
            pk__in=RawSQL("SELECT rowid FROM catalog_pathname_fts WHERE name MATCH %s", [quoted])
        )
    return PathName.objects.filter(name__icontains=text)


def glob_regex(pattern: str) -> str:
    """A shell pattern (*, ?, [abc], [!abc]) as a regular expression both PostgreSQL and Python read alike."""
    out, i, n = ["^"], 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i + (1 if i < n and pattern[i] == "!" else 0)
            j += 1 if j < n and pattern[j] == "]" else 0
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append("\\[")
                continue
            members, i = pattern[i:j], j + 1
            negate = members.startswith("!")
            members = members[1:] if negate else members
            members = members.replace("\\", "\\\\").replace("^", "\\^").replace("]", "\\]")
            out.append("[" + ("^" if negate else "") + members + "]")
        else:
            out.append(char if char.isalnum() or char == "_" else "\\" + char)
    out.append("$")
    return "".join(out)


def _ns(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def paths_matching(query: FileQuery) -> QuerySet[PathName]:
    """The paths whose name or place matches (through the name and path indexes)."""
    paths = names_matching(query.name) if query.name else PathName.objects.all()
    if query.glob:
        paths = paths.filter(name__iregex=glob_regex(query.glob))
    if query.path:
        prefix = "/" + query.path.strip("/")
        paths = paths.filter(Q(text=prefix) | Q(text__startswith=prefix.rstrip("/") + "/"))
    return paths


def versions_matching(user: Any, query: FileQuery) -> QuerySet[FileVersion]:
    """The versions this user may see that match everything but the path: scope, type, size, time, machine,
    point (the path conditions go through `paths_matching`)."""
    versions = FileVersion.objects.visible_to(user)
    if query.kind:
        versions = versions.filter(kind=query.kind)
    if query.size_min is not None:
        versions = versions.filter(size__gte=query.size_min)
    if query.size_max is not None:
        versions = versions.filter(size__lte=query.size_max)
    if query.modified_after is not None:
        versions = versions.filter(mtime_ns__gte=_ns(query.modified_after))
    if query.modified_before is not None:
        versions = versions.filter(mtime_ns__lte=_ns(query.modified_before))
    if query.machine is not None:
        versions = versions.filter(machine_id=query.machine)
    if query.point is not None:
        versions = in_point(versions, query.point)
    return versions


def in_point(versions: QuerySet[FileVersion], point: RecoveryPoint) -> QuerySet[FileVersion]:
    """The versions a point holds: its machine's intervals in its repository that contain it."""
    return versions.filter(
        machine_id=point.machine_id,
        repository_id=point.repository_id,
        first_at__lte=point.taken_at,
        last_at__gte=point.taken_at,
    )


def in_point_range(version: FileVersion, points: QuerySet[RecoveryPoint]) -> QuerySet[RecoveryPoint]:
    """The points (of those given) that hold this version: its machine's, in its repository, inside its interval."""
    return points.filter(
        machine_id=version.machine_id,
        repository_id=version.repository_id,
        taken_at__gte=version.first_at,
        taken_at__lte=version.last_at,
    )


VERSIONS_PER_FILE = 20  # on average; the files' own pages list every version


def search(user: Any, query: FileQuery, *, limit: int = 100) -> list[dict[str, Any]]:
    """Files (machine, volume, path) with their matching versions, newest first; at most `limit` paths.

    Two steps, so the cost follows the answer, not the estate: first the paths that match (through the name
    index) and hold at least one version this user may see that matches (an EXISTS probe per path), in path
    order, `limit` of them; then the versions of just those paths."""
    matching = versions_matching(user, query)
    paths = list(
        paths_matching(query)
        .filter(Exists(matching.filter(path=OuterRef("pk"))))
        .order_by("text")
        .values_list("pk", flat=True)[:limit]
    )
    rows = (
        matching.filter(path_id__in=paths)
        .select_related("path", "machine")
        .order_by("path__text", "machine__sort_name", "volume", "-last_at")[: limit * VERSIONS_PER_FILE]
    )
    files: dict[tuple[int, str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row.machine_id, row.volume, row.path_id)
        if key not in files:
            files[key] = {
                "machine": row.machine_id,
                "machine_name": row.machine.name,
                "volume": row.volume,
                "path": row.path.text,
                "name": row.path.name,
                "kind": row.kind,
                "versions": [],
            }
        files[key]["versions"].append(describe(row))
    return list(files.values())


def describe(row: FileVersion) -> dict[str, Any]:
    return {
        "id": row.pk,
        "size": row.size,
        "kind": row.kind,
        "modified": moment(row.mtime_ns),
        "first_point": row.first_point_id,
        "last_point": row.last_point_id,
        "first_seen": row.first_at,
        "last_seen": row.last_at,
        "link_target": row.link_target,
    }


def moment(ns: int | None) -> datetime.datetime | None:
    """A file time in nanoseconds as a moment (None when unknown or out of any calendar)."""
    if ns is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None
