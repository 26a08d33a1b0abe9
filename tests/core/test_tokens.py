"""API tokens: shown once, stored as digests, scoped like their owner, revocable and expiring."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.models import ApiToken
from core.services import create_api_token
from tests.conftest import Estate


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_key_is_shown_once_and_only_its_digest_is_stored(estate: Estate) -> None:
    client = Client()
    client.force_login(estate.helpdesk)
    response = client.post(
        reverse("api:token-list"), {"name": "restore script"}, content_type="application/json"
    )
    assert response.status_code == 201
    key = response.json()["key"]
    assert key.startswith("bwk_")
    token = ApiToken.objects.get()
    assert (
        key not in (token.digest, token.prefix) and token.digest == hashlib.sha256(key.encode()).hexdigest()
    )
    listing = client.get(reverse("api:token-list")).json()["results"]
    assert listing[0]["key"] is None


def test_every_issued_key_authenticates(estate: Estate) -> None:
    # Keys are random and may contain "_" themselves; each one must parse.
    for number in range(25):
        _, key = create_api_token(actor=estate.owner, user=estate.owner, name=f"t{number}", expires_at=None)
        response = Client().get(reverse("api:user-me"), **bearer(key))
        assert response.status_code == 200, key
        assert response.json()["username"] == "olga"


def test_a_token_sees_what_its_owner_sees(estate: Estate) -> None:
    _, key = create_api_token(actor=estate.helpdesk, user=estate.helpdesk, name="cli", expires_at=None)
    response = Client().get(reverse("api:machine-list"), **bearer(key))
    assert {row["name"] for row in response.json()["results"]} == {"fin-db-01", "fin-file-01"}
    research = reverse("api:machine-detail", kwargs={"pk": estate.research_vm.pk})
    assert Client().get(research, **bearer(key)).status_code == 404


def test_revoked_expired_and_forged_tokens_are_refused(estate: Estate) -> None:
    token, key = create_api_token(actor=estate.admin, user=estate.admin, name="old", expires_at=None)
    client = Client()
    client.force_login(estate.admin)
    assert client.delete(reverse("api:token-detail", kwargs={"pk": token.pk})).status_code == 204
    assert Client().get(reverse("api:user-me"), **bearer(key)).status_code == 401

    past = timezone.now() - datetime.timedelta(minutes=1)
    _, expired = create_api_token(actor=estate.admin, user=estate.admin, name="exp", expires_at=past)
    assert Client().get(reverse("api:user-me"), **bearer(expired)).status_code == 401

    _, good = create_api_token(actor=estate.admin, user=estate.admin, name="good", expires_at=None)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for bad in (forged, "bwk_nope", "garbage", good + " extra"):
        assert Client().get(reverse("api:user-me"), **bearer(bad)).status_code == 401, bad


def test_a_deactivated_users_token_stops_working(estate: Estate) -> None:
    _, key = create_api_token(actor=estate.owner, user=estate.owner, name="cli", expires_at=None)
    estate.owner.is_active = False
    estate.owner.save()
    assert Client().get(reverse("api:user-me"), **bearer(key)).status_code == 401


@pytest.mark.django_db
def test_a_new_password_revokes_the_users_api_tokens_unless_kept(estate) -> None:  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    from core import services

    _, key = services.create_api_token(
        actor=estate.helpdesk, user=estate.helpdesk, name="laptop", expires_at=None
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/machines/").status_code == 200
    services.update_user(
        actor=estate.admin, user=estate.helpdesk, password="kept-Tokens-Pass-42", keep_api_tokens=True
    )
    assert client.get("/api/machines/").status_code == 200
    admin = APIClient()
    admin.force_authenticate(estate.admin)
    answer = admin.patch(
        f"/api/users/{estate.helpdesk.pk}/", {"password": "a-Stolen-one-was-42"}, format="json"
    )
    assert answer.status_code == 200
    assert client.get("/api/machines/").status_code == 401


@pytest.mark.django_db
def test_the_api_refuses_to_demote_or_deactivate_the_last_admin(estate) -> None:  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    admin = APIClient()
    admin.force_authenticate(estate.admin)
    for change in ({"role": "helpdesk"}, {"is_active": False}):
        answer = admin.patch(f"/api/users/{estate.admin.pk}/", change, format="json")
        assert answer.status_code == 400 and "last active backup admin" in answer.json()["role"][0]
    estate.admin.refresh_from_db()
    assert estate.admin.role == "admin" and estate.admin.is_active
