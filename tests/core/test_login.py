"""Signing in: the page, redirects, and throttling of repeated failures."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from core.models import AuditEvent
from tests.conftest import Estate
from tests.factories import PASSWORD


def test_sign_in_lands_on_the_page_asked_for(estate: Estate) -> None:
    client = Client()
    response = client.get(reverse("machine-list"))
    assert response.status_code == 302 and response["Location"] == "/login/?next=/machines/"
    response = client.post(
        "/login/?next=/machines/", {"username": "hank", "password": PASSWORD, "next": "/machines/"}
    )
    assert response["Location"] == "/machines/"


def test_sign_in_never_redirects_off_site(estate: Estate) -> None:
    response = Client().post(
        "/login/", {"username": "hank", "password": PASSWORD, "next": "https://evil.example/steal"}
    )
    assert response["Location"] == reverse("dashboard")


def test_repeated_failures_lock_the_name_even_with_the_right_password(estate: Estate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_FAILURE_LIMIT = 3
    client = Client(REMOTE_ADDR="203.0.113.5")
    for _ in range(3):
        response = client.post(reverse("login"), {"username": "hank", "password": "not-it"})
        assert "Please enter a correct" in response.content.decode()
    response = Client(REMOTE_ADDR="203.0.113.99").post(
        reverse("login"), {"username": "hank", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert "Too many failed sign-ins" in response.content.decode()
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == 3
    # Another person from another address is not locked out by hank's failures.
    response = Client(REMOTE_ADDR="198.51.100.1").post(
        reverse("login"), {"username": "olga", "password": PASSWORD}
    )
    assert response.status_code == 302


def test_one_address_guessing_many_names_is_locked(estate: Estate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_FAILURE_LIMIT = 3
    client = Client(REMOTE_ADDR="203.0.113.7")
    for name in ("a", "b", "c"):
        client.post(reverse("login"), {"username": name, "password": "x"})
    response = client.post(reverse("login"), {"username": "olga", "password": PASSWORD})
    assert "Too many failed sign-ins" in response.content.decode()
