"""API tokens: shown once, stored as digests, scoped like their owner, revocable and expiring."""

from __future__ import annotations

import datetime
import hashlib

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
