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


def test_repeated_failures_lock_the_name_from_that_address_only(estate: Estate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_FAILURE_LIMIT = 3
    attacker = Client(REMOTE_ADDR="203.0.113.5")
    for _ in range(3):
        response = attacker.post(reverse("login"), {"username": "hank", "password": "not-it"})
        assert "Please enter a correct" in response.content.decode()
    # The attacker's address is locked for that name, even with the right password ...
    response = attacker.post(reverse("login"), {"username": "hank", "password": PASSWORD})
    assert response.status_code == 200 and "Too many failed sign-ins" in response.content.decode()
    assert AuditEvent.objects.filter(action="auth.login_failed").count() == 3
    # ... but hank, signing in from his own desk, is not locked out by somebody else's guesses.
    response = Client(REMOTE_ADDR="198.51.100.20").post(
        reverse("login"), {"username": "hank", "password": PASSWORD}
    )
    assert response.status_code == 302


def test_an_admin_cannot_be_locked_out_by_failures_elsewhere(estate: Estate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_FAILURE_LIMIT = 10
    for _ in range(10):
        Client(REMOTE_ADDR="203.0.113.66").post(reverse("login"), {"username": "alice", "password": "guess"})
    response = Client(REMOTE_ADDR="198.51.100.2").post(
        reverse("login"), {"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 302


def test_one_address_guessing_many_names_is_locked(estate: Estate, settings) -> None:  # type: ignore[no-untyped-def]
    settings.LOGIN_FAILURE_LIMIT = 3
    client = Client(REMOTE_ADDR="203.0.113.7")
    for number in range(9):  # three times the limit, each name below it
        client.post(reverse("login"), {"username": f"user{number}", "password": "x"})
    response = client.post(reverse("login"), {"username": "olga", "password": PASSWORD})
    assert "Too many failed sign-ins" in response.content.decode()
    response = Client(REMOTE_ADDR="198.51.100.3").post(
        reverse("login"), {"username": "olga", "password": PASSWORD}
    )
    assert response.status_code == 302


def test_one_name_guessed_from_many_addresses_gets_a_short_back_off(estate: Estate, settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.cache import cache

    settings.LOGIN_FAILURE_LIMIT = 2
    for number in range(20):  # ten times the limit, spread over twenty addresses
        Client(REMOTE_ADDR=f"203.0.113.{number + 1}").post(
            reverse("login"), {"username": "olga", "password": "x"}
        )
    response = Client(REMOTE_ADDR="198.51.100.4").post(
        reverse("login"), {"username": "olga", "password": PASSWORD}
    )
    assert "Too many failed sign-ins" in response.content.decode()
    cache.delete(
        "login-backoff:user:olga"
    )  # the back-off is short (LOGIN_BACKOFF_SECONDS); here it has passed
    response = Client(REMOTE_ADDR="198.51.100.4").post(
        reverse("login"), {"username": "olga", "password": PASSWORD}
    )
    assert response.status_code == 302
