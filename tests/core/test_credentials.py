"""Credentials are encrypted at rest, never returned, never logged, and survive key rotation."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import Client
from django.urls import reverse

from core.crypto import CredentialDecryptionError
from core.models import AuditEvent, Credential
from core.services import rotate_credentials
from tests.conftest import Estate

SECRET = "Vc3nter-Pa55word!"


@pytest.fixture
def admin_client(estate: Estate) -> Client:
    client = Client()
    client.force_login(estate.admin)
    return client


def create(client: Client) -> dict:  # type: ignore[type-arg]
    response = client.post(
        reverse("api:credential-list"),
        {"name": "vcenter-prod", "kind": "vsphere", "username": "svc-backup@vsphere.local", "secret": SECRET},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()  # type: ignore[no-any-return]


def test_secret_is_stored_encrypted_and_never_returned(admin_client: Client, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    with connection.execute_wrapper(
        lambda execute, sql, params, many, context: execute(sql, params, many, context)
    ):
        body = create(admin_client)
    assert "secret" not in body
    listing = admin_client.get(reverse("api:credential-list")).content.decode()
    detail = admin_client.get(reverse("api:credential-detail", kwargs={"pk": body["id"]})).content.decode()
    assert SECRET not in listing and SECRET not in detail
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_encrypted FROM core_credential")
        (stored,) = cursor.fetchone()
    assert SECRET not in stored
    assert Credential.objects.get(pk=body["id"]).reveal() == SECRET
    assert SECRET not in str(list(AuditEvent.objects.values_list("before", "after")))
    assert SECRET not in caplog.text


def test_replacing_a_secret_keeps_the_old_one_out_of_the_audit(admin_client: Client) -> None:
    body = create(admin_client)
    url = reverse("api:credential-detail", kwargs={"pk": body["id"]})
    response = admin_client.patch(url, {"secret": "n3w-Secret-value"}, content_type="application/json")
    assert response.status_code == 200
    assert Credential.objects.get(pk=body["id"]).reveal() == "n3w-Secret-value"
    event = AuditEvent.objects.filter(action="credential.update").latest("pk")
    assert event.before["secret_changed_at"] != event.after["secret_changed_at"]
    assert "n3w-Secret-value" not in str(event.after) and SECRET not in str(event.before)


def test_malformed_payloads_get_field_errors(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("api:credential-list"), {"name": "", "kind": "teapot"}, content_type="application/json"
    )
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) >= {"name", "kind"}
    response = admin_client.post(
        reverse("api:credential-list"),
        {"name": "x", "kind": "s3", "username": "AKIA"},
        content_type="application/json",
    )
    assert response.status_code == 400 and "secret" in response.json()
    assert not Credential.objects.exists()


def test_rotation_re_encrypts_with_the_new_key(admin_client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    body = create(admin_client)
    old_key = settings.CREDENTIAL_KEYS[0]
    before = Credential.objects.get(pk=body["id"]).secret_encrypted
    new_key = Fernet.generate_key().decode()
    settings.CREDENTIAL_KEYS = [new_key, old_key]
    assert rotate_credentials(actor=None) == 1
    rotated = Credential.objects.get(pk=body["id"])
    assert rotated.secret_encrypted != before
    settings.CREDENTIAL_KEYS = [new_key]  # the old key is gone; the secret still decrypts
    assert rotated.reveal() == SECRET


def test_a_wrong_key_is_a_clear_error_not_garbage(admin_client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    body = create(admin_client)
    settings.CREDENTIAL_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CredentialDecryptionError, match="BULWARK_CREDENTIAL_KEYS"):
        Credential.objects.get(pk=body["id"]).reveal()
