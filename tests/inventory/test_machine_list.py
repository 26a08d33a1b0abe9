"""The machine list an admin of Veeam or PBS expects: sortable columns, natural order, page sizes, bulk actions."""

from __future__ import annotations

import re

import pytest

from protection.models import Assignment, BackupRun
from tests.conftest import Estate
from tests.factories import MachineFactory

pytestmark = pytest.mark.django_db


def names(page: str) -> list[str]:
    return re.findall(r'<td><a href="/machines/\d+/">([^<]+)</a>', page)


def test_names_sort_as_people_read_them_both_ways(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    for name in ("VM10", "VM2", "vm1", "VM100"):
        MachineFactory(name=name)
    client = client_for("admin")
    listed = [
        n for n in names(client.get("/machines/?sort=name").content.decode()) if n.lower().startswith("vm")
    ]
    assert listed == ["vm1", "VM2", "VM10", "VM100"]
    listed = [
        n for n in names(client.get("/machines/?sort=-name").content.decode()) if n.lower().startswith("vm")
    ]
    assert listed == ["VM100", "VM10", "VM2", "vm1"]


def test_headers_sort_and_the_page_size_is_chosen(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    for number in range(30):
        MachineFactory(name=f"bulk-{number:02d}")
    page = client_for("admin").get("/machines/?size=25&sort=-last_seen").content.decode()
    assert len(names(page)) == 25
    assert 'href="?size=25&amp;sort=name"' in page  # the headers keep the filters and toggle the order
    assert (
        len(names(client_for("admin").get("/machines/?size=7").content.decode())) == 33
    )  # not a size: default 50


def test_bulk_actions_assign_back_up_and_group(estate: Estate, client_for, tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    from catalog import repositories
    from catalog.services import create_repository
    from protection import services

    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    gold = services.create_policy(actor=None, name="gold")
    services.update_policy(
        actor=None, policy=gold, repository=create_repository(actor=None, name="r", kind="local", path="r")
    )
    client = client_for("admin")
    ticked = [estate.finance_vm.pk, estate.research_vm.pk]
    client.post("/machines/bulk/", {"machines": ticked, "action": "assign", "policy": gold.pk})
    assert Assignment.objects.filter(machine__in=ticked, policy=gold).count() == 2
    client.post("/machines/bulk/", {"machines": ticked, "action": "backup"})
    assert BackupRun.objects.filter(machine__in=ticked).count() == 2
    client.post(
        "/machines/bulk/",
        {"machines": [estate.research_vm.pk], "action": "group", "group": estate.finance.pk},
    )
    assert estate.finance.machines.filter(pk=estate.research_vm.pk).exists()
    assert (
        client_for("helpdesk").post("/machines/bulk/", {"machines": ticked, "action": "backup"}).status_code
        == 403
    )
