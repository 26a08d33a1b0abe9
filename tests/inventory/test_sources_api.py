"""The API of sources, enrolment tokens, rules and "why is this machine protected": field errors, secrets that
never come back, scope."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from core.models import AuditEvent, Credential
from inventory.models import DiscoveryRun, Source
from protection import services as protection
from tests.conftest import Estate
from tests.peers import free_port


def post(client: Client, url: str, data: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = client.post(url, data=json.dumps(data), content_type="application/json")
    return response.status_code, response.json() if response.content else {}


@pytest.mark.django_db
def test_a_source_needs_its_fields_and_never_returns_its_password(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for("admin")
    status, body = post(admin, "/api/sources/", {"kind": "vcenter"})
    assert status == 400 and {"name", "address"} <= set(body)
    status, body = post(admin, "/api/sources/", {"name": "vc", "kind": "vcenter", "address": "vc.example"})
    assert status == 400 and "password" in body
    status, body = post(
        admin,
        "/api/sources/",
        {
            "name": "hv",
            "kind": "hyperv",
            "address": "hv",
            "username": "u",
            "password": "p",
            "options": {"transport": "smoke"},
        },
    )
    assert status == 400 and "options" in body
    status, body = post(
        admin,
        "/api/sources/",
        {
            "name": "vc",
            "kind": "vcenter",
            "address": "127.0.0.1",
            "port": free_port(),
            "username": "svc",
            "password": "Sup3r-secret!",
        },
    )
    assert status == 201, body
    assert "password" not in body and "Sup3r-secret!" not in json.dumps(body)
    source = Source.objects.get(pk=body["id"])
    assert source.credential.reveal() == "Sup3r-secret!"
    assert "Sup3r-secret!" not in Credential.objects.get(pk=source.credential_id).secret_encrypted
    assert AuditEvent.objects.filter(action="source.create").exists()
    assert "Sup3r-secret!" not in json.dumps(list(AuditEvent.objects.values("before", "after")))


@pytest.mark.django_db
def test_test_and_discover_actions(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for("admin")
    _, body = post(
        admin,
        "/api/sources/",
        {
            "name": "vc",
            "kind": "vcenter",
            "address": "127.0.0.1",
            "port": free_port(),
            "username": "u",
            "password": "p",
        },
    )
    status, answer = post(admin, f"/api/sources/{body['id']}/test/", {})
    assert status == 400 and answer["code"] == "unreachable" and "refused the connection" in answer["detail"]
    status, run = post(admin, f"/api/sources/{body['id']}/discover/", {})
    assert status == 202 and run["state"] == "queued"
    status, again = post(admin, f"/api/sources/{body['id']}/discover/", {})
    assert again["id"] == run["id"] and DiscoveryRun.objects.count() == 1
    assert client_for("helpdesk").post(f"/api/sources/{body['id']}/discover/").status_code == 403


@pytest.mark.django_db
def test_why_a_machine_is_protected_and_assigning_by_hand(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    gold = protection.create_policy(actor=None, name="gold")
    protection.create_rule(actor=None, name="finance db", policy=gold, match_name="fin-db-*")
    answer = client_for("helpdesk").get(f"/api/machine-protection/{estate.finance_vm.pk}/").json()
    # Help-desk learns the outcome, not the rules (tests/protection/test_field_scope.py).
    assert answer["protected"] and answer["policy"]["name"] == "gold" and answer["rules"] == []
    answer = client_for("admin").get(f"/api/machine-protection/{estate.finance_vm.pk}/").json()
    assert answer["assigned_by"]["rule"] == "finance db"
    assert answer["rules"][0]["criteria"] == [
        {"name": "name", "wanted": "fin-db-*", "actual": "fin-db-01", "matched": True}
    ]
    assert client_for("helpdesk").get(f"/api/machine-protection/{estate.research_vm.pk}/").status_code == 404
    assert (
        client_for("helpdesk")
        .patch(f"/api/machine-protection/{estate.finance_vm.pk}/", data="{}", content_type="application/json")
        .status_code
        == 403
    )
    bronze = protection.create_policy(actor=None, name="bronze")
    response = client_for("admin").patch(
        f"/api/machine-protection/{estate.research_vm.pk}/",
        data=json.dumps({"policy": bronze.pk, "reason": "CHG-1234"}),
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["assigned_by"]["person"] == "alice"
    assert response.json()["reason"] == "CHG-1234"


@pytest.mark.django_db
def test_rules_are_validated_and_previewed(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for("admin")
    gold = protection.create_policy(actor=None, name="gold")
    status, body = post(admin, "/api/rules/", {"name": "everything", "policy": gold.pk})
    assert status == 400 and "non_field_errors" in body
    status, body = post(admin, "/api/rules/", {"name": "no policy", "match_name": "x*"})
    assert status == 400 and "policy" in body
    status, body = post(
        admin, "/api/rules/dry-run/", {"name": "preview", "policy": gold.pk, "match_name": "fin-*"}
    )
    assert status == 200 and body["count"] == 2 and not protection.Assignment.objects.exists()
    status, body = post(admin, "/api/rules/", {"name": "fin", "policy": gold.pk, "match_name": "fin-*"})
    assert status == 201 and protection.Assignment.objects.count() == 2


@pytest.mark.django_db
def test_an_enrolment_token_is_shown_once(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for("admin")
    status, body = post(admin, "/api/enrolment-tokens/", {"label": "rack 4", "hours": 2})
    assert status == 201 and body["token"].startswith("bwe_")
    listed = admin.get("/api/enrolment-tokens/").json()
    assert listed["results"][0]["token"] is None
    status, body = post(admin, "/api/enrolment-tokens/", {"label": "x", "hours": 0})
    assert status == 400 and "hours" in body
