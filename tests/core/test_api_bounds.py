"""Filters by id tell nothing about other scopes, and numbers too large for the database are a 4xx, not a 500."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import Estate

pytestmark = pytest.mark.django_db

HUGE = str(10**23)


def api(estate: Estate, role: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(estate.user(role))
    return client


@pytest.mark.parametrize("endpoint", ["/api/runs/", "/api/alerts/"])
def test_an_out_of_scope_id_answers_as_a_missing_one(estate: Estate, endpoint: str) -> None:
    client = api(estate, "helpdesk")
    foreign = client.get(endpoint, {"machine": estate.research_vm.pk})
    missing = client.get(endpoint, {"machine": 987654})
    assert foreign.status_code == missing.status_code == 400
    assert foreign.json() == missing.json() | {}
    assert client.get(endpoint, {"machine": estate.finance_vm.pk}).status_code == 200


def test_machines_filter_by_source_and_policy_within_scope(estate: Estate) -> None:
    from inventory.services import create_source

    lab = create_source(
        actor=estate.admin, name="lab vc", kind="vcenter", address="lab.example", username="u", password="p"
    )
    estate.research_vm.source = lab
    estate.research_vm.save()
    client = api(estate, "helpdesk")
    assert client.get("/api/machines/", {"source": lab.pk}).status_code == 400  # as a missing id
    assert client.get("/api/machines/", {"source": 424242}).status_code == 400
    assert api(estate, "admin").get("/api/machines/", {"source": lab.pk}).json()["count"] == 1


@pytest.mark.parametrize(
    "query",
    [{"limit": str(2**63)}, {"limit": HUGE}, {"offset": HUGE}, {"source": HUGE}, {"policy": HUGE}],
)
def test_huge_numbers_in_a_query_are_never_a_500(estate: Estate, query: dict[str, str], client_for) -> None:  # type: ignore[no-untyped-def]
    answer = api(estate, "admin").get("/api/machines/", query)
    assert answer.status_code in (200, 400), answer.content
    page = client_for("admin").get("/machines/", query)
    assert page.status_code == 200


def test_a_limit_is_capped(estate: Estate) -> None:
    answer = api(estate, "admin").get("/api/machines/", {"limit": str(2**63)})
    assert answer.status_code == 200
    assert "limit=1000" in (answer.json()["next"] or "limit=1000")
