"""Search, browse and versions over the API: by name (trigram index on PostgreSQL, FTS5 on SQLite), pattern,
path prefix, size and time, grouped by file with its versions; nothing outside the user's scope is found,
browsed or listed, and a foreign id answers as a missing one."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.indexer import path_ids
from catalog.models import FileVersion, RecoveryPoint, Repository
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogued(estate: Estate, tmp_path, settings):  # type: ignore[no-untyped-def]
    """Two points of a finance VM (report.pdf changed between them) and one of a research VM."""
    from catalog import repositories
    from catalog.services import create_repository

    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    repository = create_repository(actor=None, name="primary", kind="local", path="repo")
    now = timezone.now()
    points = {}
    for name, machine, days in (
        ("fin1", estate.finance_vm, 2),
        ("fin2", estate.finance_vm, 1),
        ("lab", estate.research_vm, 1),
    ):
        points[name] = RecoveryPoint.objects.create(
            machine=machine,
            repository=repository,
            snapshot_id=f"snap-{name}",
            taken_at=now - datetime.timedelta(days=days),
            catalog_state="complete",
        )
    ids = path_ids(
        [
            "/",
            "/home",
            "/home/alice",
            "/home/alice/Quarterly-Report.pdf",
            "/home/alice/notes.txt",
            "/srv/lab/report.pdf",
            "/srv/lab",
            "/srv",
        ]
    )

    def version(
        point_from: str, point_to: str, path: str, parent: str, size: int, machine=None
    ) -> FileVersion:  # type: ignore[no-untyped-def]
        first, last = points[point_from], points[point_to]
        return FileVersion.objects.create(
            machine=first.machine,
            repository=repository,
            volume="2000:p1",
            path_id=ids[path],
            parent_id=ids[parent],
            kind="file",
            size=size,
            mtime_ns=int(first.taken_at.timestamp() * 1e9),
            signature=f"{abs(hash((path, size))):x}"[:32],
            first_point=first,
            last_point=last,
            first_at=first.taken_at,
            last_at=last.taken_at,
        )

    old = version("fin1", "fin1", "/home/alice/Quarterly-Report.pdf", "/home/alice", 1000)
    new = version("fin2", "fin2", "/home/alice/Quarterly-Report.pdf", "/home/alice", 2000)
    notes = version("fin1", "fin2", "/home/alice/notes.txt", "/home/alice", 10)
    lab = version("lab", "lab", "/srv/lab/report.pdf", "/srv/lab", 500)
    return {"points": points, "old": old, "new": new, "notes": notes, "lab": lab, "repository": repository}


def api(estate: Estate, role: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(estate.user(role))
    return client


def test_a_name_substring_finds_a_file_with_both_versions_in_scope_only(estate: Estate, catalogued) -> None:  # type: ignore[no-untyped-def]
    found = api(estate, "helpdesk").get("/api/catalog/search/", {"name": "report"}).json()["results"]
    assert [(f["machine_name"], f["path"]) for f in found] == [
        ("fin-db-01", "/home/alice/Quarterly-Report.pdf")
    ]
    assert [v["size"] for v in found[0]["versions"]] == [2000, 1000]  # newest first
    everything = api(estate, "admin").get("/api/catalog/search/", {"name": "REPORT"}).json()["results"]
    assert {f["path"] for f in everything} == {"/home/alice/Quarterly-Report.pdf", "/srv/lab/report.pdf"}
    assert (
        api(estate, "helpdesk").get("/api/catalog/search/", {"name": "re"}).status_code == 200
    )  # short: a scan
    assert api(estate, "owner").get("/api/catalog/search/", {"name": "report"}).status_code == 403


def test_pattern_path_size_time_and_point_filters(estate: Estate, catalogued) -> None:  # type: ignore[no-untyped-def]
    admin = api(estate, "admin")

    def paths(**query: object) -> set[str]:
        response = admin.get("/api/catalog/search/", query)
        assert response.status_code == 200, response.json()
        return {f["path"] for f in response.json()["results"]}

    assert paths(glob="*.PDF") == {"/home/alice/Quarterly-Report.pdf", "/srv/lab/report.pdf"}
    assert paths(glob="notes.???") == {"/home/alice/notes.txt"}
    assert paths(path="/home/alice") == {"/home/alice/Quarterly-Report.pdf", "/home/alice/notes.txt"}
    assert paths(path="/home/ali") == set()  # a prefix of whole components
    assert paths(name="report", size_min=1500) == {"/home/alice/Quarterly-Report.pdf"}
    assert paths(name="report", size_max=600) == {"/srv/lab/report.pdf"}
    old_point = catalogued["points"]["fin1"]
    in_old = admin.get("/api/catalog/search/", {"name": "report", "point": old_point.pk}).json()["results"]
    assert [v["size"] for f in in_old for v in f["versions"]] == [1000]
    after = (timezone.now() - datetime.timedelta(hours=36)).isoformat()
    assert paths(name="report", modified_after=after) == {
        "/home/alice/Quarterly-Report.pdf",
        "/srv/lab/report.pdf",
    }
    bad = admin.get("/api/catalog/search/", {"size_min": "lots"})
    assert bad.status_code == 400 and "size_min" in bad.json()
    assert admin.get("/api/catalog/search/", {}).status_code == 400  # nothing to search for


def test_browse_and_versions_keep_to_the_scope(estate: Estate, catalogued) -> None:  # type: ignore[no-untyped-def]
    helpdesk = api(estate, "helpdesk")
    fin2 = catalogued["points"]["fin2"]
    folder = helpdesk.get(f"/api/points/{fin2.pk}/browse/", {"path": "/home/alice"}).json()
    assert [(e["name"], e["version"]["size"]) for e in folder["entries"]] == [
        ("notes.txt", 10),
        ("Quarterly-Report.pdf", 2000),
    ] or [(e["name"], e["version"]["size"]) for e in folder["entries"]] == [
        ("Quarterly-Report.pdf", 2000),
        ("notes.txt", 10),
    ]
    versions = helpdesk.get(f"/api/files/{catalogued['old'].pk}/versions/").json()
    assert [v["size"] for v in versions["versions"]] == [2000, 1000]
    lab_point = catalogued["points"]["lab"]
    missing = RecoveryPoint.objects.order_by("-pk").first().pk + 1000  # type: ignore[union-attr]
    assert helpdesk.get(f"/api/points/{lab_point.pk}/browse/").status_code == 404  # another scope ...
    assert helpdesk.get(f"/api/points/{missing}/browse/").status_code == 404  # ... answers as a missing point
    assert helpdesk.get(f"/api/files/{catalogued['lab'].pk}/versions/").status_code == 404
    assert helpdesk.get("/api/catalog/search/", {"point": lab_point.pk, "kind": "file"}).status_code == 404
    assert helpdesk.get(
        "/api/catalog/search/", {"machine": estate.research_vm.pk, "kind": "file"}
    ).json() == {"results": []}
    assert Repository.objects.count() == 1


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*.PDF", "a.pdf", True),
        ("notes.???", "notes.txt", True),
        ("report-202[0-9].xlsx", "report-2024.xlsx", True),
        ("[!a]*", "abc", False),
        ("[!a]*", "bc", True),
        ("a+b(c)", "a+b(c)", True),
        ("x.y", "xzy", False),
        ("[abc", "[abc", True),
        ("\u00dcber *", "\u00fcber x", True),
    ],
)
def test_a_glob_means_on_postgresql_what_it_means_in_a_shell(pattern: str, name: str, matches: bool) -> None:
    """The pattern goes to the database as a regular expression: checked against the database itself."""
    from catalog.models import PathName
    from catalog.search import glob_regex

    ids = path_ids([f"/{name}"])
    assert PathName.objects.filter(pk=ids[f"/{name}"], name__iregex=glob_regex(pattern)).exists() == matches
