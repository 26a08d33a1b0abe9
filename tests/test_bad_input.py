"""Bad input is a 4xx with field errors, never a 500 (each case was a 500 once)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import Estate

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(estate: Estate) -> APIClient:
    client = APIClient()
    client.force_authenticate(estate.admin)
    return client


def test_a_credential_without_a_user_name_is_a_400(admin: APIClient) -> None:
    answer = admin.post("/api/credentials/", {"name": "x", "kind": "vsphere", "secret": "s"}, format="json")
    assert answer.status_code == 400 and "username" in answer.json()


@pytest.mark.parametrize("missing", ["password", "role"])
def test_a_user_without_password_or_role_is_handled(admin: APIClient, missing: str) -> None:
    body = {"username": f"new-{missing}", "role": "helpdesk", "password": "a-Good-password-42"}
    body.pop(missing)
    answer = admin.post("/api/users/", body, format="json")
    assert answer.status_code in (201, 400), answer.content
    if missing == "role":
        assert answer.status_code == 400 and "role" in answer.json()


def test_deleting_a_credential_in_use_is_a_409_naming_its_users(admin: APIClient, estate: Estate) -> None:
    from inventory.services import create_source

    source = create_source(
        actor=None, name="vc", kind="vcenter", address="vc.example", username="u", password="p"
    )
    answer = admin.delete(f"/api/credentials/{source.credential_id}/")
    assert answer.status_code == 409
    assert "vc" in answer.json()["detail"]


def test_a_rule_position_too_large_is_a_400(admin: APIClient, estate: Estate) -> None:
    from protection.services import create_policy

    policy = create_policy(actor=None, name="gold")
    answer = admin.post(
        "/api/rules/",
        {"name": "r", "policy": policy.pk, "match_name": "x*", "position": 10**23},
        format="json",
    )
    assert answer.status_code == 400 and "position" in answer.json()


def test_the_restore_and_copies_forms_refuse_a_non_number(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    from protection.services import create_policy

    policy = create_policy(actor=None, name="gold")
    client = client_for("admin")
    answer = client.post(
        f"/machines/{estate.finance_vm.pk}/restore/", {"point": "abc", "kind": "image_files", "target": "t"}
    )
    assert answer.status_code in (302, 400, 404), answer.status_code
    answer = client.post(f"/policies/{policy.pk}/copies/", {"remove": "abc"})
    assert answer.status_code in (302, 400, 404), answer.status_code


def test_a_refused_page_logs_one_line_not_a_traceback(estate: Estate, client_for, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from core.logfilters import OneLineClientErrors

    with caplog.at_level(logging.WARNING, logger="django.request"):
        assert client_for("helpdesk").get("/users/").status_code == 403
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records and all(OneLineClientErrors().filter(r) and r.exc_info is None for r in records)
    formatted = logging.Formatter().format(records[0])
    assert "Traceback" not in formatted and len(formatted.splitlines()) == 1
