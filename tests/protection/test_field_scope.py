"""Scripts, paths, repositories and rule criteria are admins' and auditors' fields; counts are scoped."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from protection import services
from protection.api.serializers import ADMIN_POLICY_FIELDS
from protection.models import Policy
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


def api(estate: Estate, role: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(estate.user(role))
    return client


@pytest.fixture
def gold(estate: Estate) -> Policy:
    policy = services.create_policy(actor=estate.admin, name="gold")
    services.update_policy(
        actor=estate.admin,
        policy=policy,
        pre_script="mysql -uroot -pS3cret -e 'FLUSH TABLES WITH READ LOCK'",
        include_paths="/srv/finance\n/srv/research-secrets",
    )
    services.create_rule(actor=estate.admin, name="research by name", policy=policy, match_name="lab-*")
    services.create_rule(actor=estate.admin, name="finance by name", policy=policy, match_name="fin-*")
    return policy


@pytest.mark.parametrize("role", ["helpdesk", "owner"])
def test_scoped_roles_read_no_scripts_paths_or_repository(estate: Estate, gold: Policy, role: str) -> None:
    answer = api(estate, role).get(f"/api/policies/{gold.pk}/")
    assert answer.status_code == 200
    body = answer.json()
    assert not set(ADMIN_POLICY_FIELDS) & set(body)
    assert "S3cret" not in answer.content.decode()
    assert body["name"] == "gold"
    listed = api(estate, role).get("/api/policies/").json()["results"][0]
    assert not set(ADMIN_POLICY_FIELDS) & set(listed)


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_admins_and_auditors_read_every_field(estate: Estate, gold: Policy, role: str) -> None:
    body = api(estate, role).get(f"/api/policies/{gold.pk}/").json()
    assert set(ADMIN_POLICY_FIELDS) <= set(body)
    assert body["machines"] == 3  # fin-db-01, fin-file-01, lab-gpu-07


def test_machine_counts_are_scoped(estate: Estate, gold: Policy) -> None:
    assert api(estate, "helpdesk").get(f"/api/policies/{gold.pk}/").json()["machines"] == 2
    assert api(estate, "outsider").get(f"/api/policies/{gold.pk}/").json()["machines"] == 0


@pytest.mark.parametrize("role", ["helpdesk", "owner"])
def test_the_why_answer_names_no_rule_for_scoped_roles(estate: Estate, gold: Policy, role: str) -> None:
    answer = api(estate, role).get(f"/api/machine-protection/{estate.finance_vm.pk}/")
    assert answer.status_code == 200
    body = answer.json()
    assert body["protected"] is True and body["policy"]["name"] == "gold"
    assert body["rules"] == []
    text = answer.content.decode()
    assert "research by name" not in text and "lab-*" not in text and "finance by name" not in text


def test_the_why_answer_lists_every_rule_for_admins(estate: Estate, gold: Policy) -> None:
    body = api(estate, "admin").get(f"/api/machine-protection/{estate.finance_vm.pk}/").json()
    assert [rule["name"] for rule in body["rules"]] == ["research by name", "finance by name"]


@pytest.mark.parametrize("role", ["helpdesk", "owner"])
def test_the_machine_page_shows_no_rule_names_to_scoped_roles(
    estate: Estate, gold: Policy, role: str, client_for
) -> None:  # type: ignore[no-untyped-def]
    page = client_for(role).get(f"/machines/{estate.finance_vm.pk}/").content.decode()
    assert "Policy <strong>gold</strong>" in page
    assert "research by name" not in page and "lab-*" not in page
    admin_page = client_for("admin").get(f"/machines/{estate.finance_vm.pk}/").content.decode()
    assert "research by name" in admin_page
