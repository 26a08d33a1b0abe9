"""Every state-changing action leaves an audit event: who, what, when, from where, before and after."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from core.models import AuditEvent
from tests.conftest import Estate
from tests.factories import PASSWORD


def latest(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("pk")


def test_sign_in_and_out_are_audited_with_the_client_address(estate: Estate) -> None:
    client = Client(REMOTE_ADDR="10.1.2.3")
    response = client.post(reverse("login"), {"username": "hank", "password": PASSWORD})
    assert response.status_code == 302
    event = latest("auth.login")
    assert (event.actor, event.ip_address) == (estate.helpdesk, "10.1.2.3")
    client.post(reverse("logout"))
    assert latest("auth.logout").actor == estate.helpdesk


def test_failed_sign_in_records_the_name_never_the_password(estate: Estate) -> None:
    Client(REMOTE_ADDR="10.9.9.9").post(reverse("login"), {"username": "hank", "password": "wrong-guess-42"})
    event = latest("auth.login_failed")
    assert (event.actor, event.target_repr, event.ip_address) == (None, "hank", "10.9.9.9")
    assert "wrong-guess-42" not in str(AuditEvent.objects.values_list("before", "after", "target_repr"))


def test_api_change_records_before_and_after(estate: Estate) -> None:
    client = Client(REMOTE_ADDR="192.0.2.7")
    client.force_login(estate.admin)
    url = reverse("api:machine-detail", kwargs={"pk": estate.finance_vm.pk})
    response = client.patch(
        url, {"owner": "Finance IT", "jurisdiction": "EU"}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    event = latest("machine.update")
    assert event.actor == estate.admin
    assert event.ip_address == "192.0.2.7"
    assert event.target_repr == "fin-db-01"
    assert event.before == {"owner": "", "jurisdiction": "", "groups": [estate.finance.pk]}
    assert event.after == {"owner": "Finance IT", "jurisdiction": "EU", "groups": [estate.finance.pk]}


def test_token_requests_are_attributed_to_the_token_owner(estate: Estate) -> None:
    from core.services import create_api_token

    _, key = create_api_token(actor=estate.admin, user=estate.admin, name="automation", expires_at=None)
    response = Client().post(
        reverse("api:machine-group-list"),
        {"name": "hr", "members": [estate.owner.pk]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 201, response.content
    event = latest("machine_group.create")
    assert event.actor == estate.admin
    assert event.after["members"] == [estate.owner.pk]


def test_user_role_change_through_the_page_is_audited(estate: Estate) -> None:
    client = Client()
    client.force_login(estate.admin)
    response = client.post(
        reverse("user-edit", kwargs={"pk": estate.owner.pk}),
        {
            "role": "helpdesk",
            "is_active": "on",
            "machine_groups": [estate.finance.pk],
            "email": "olga@example.com",
        },
    )
    assert response.status_code == 302, response.content
    event = latest("user.update")
    assert (event.before["role"], event.after["role"]) == ("owner", "helpdesk")
    assert event.after["email"] == "olga@example.com"


def test_audit_events_are_append_only(estate: Estate) -> None:
    from core.audit import record

    event = record("test.action", actor=estate.admin, target=estate.finance_vm)
    event.action = "tampered"
    with pytest.raises(ValueError, match="append-only"):
        event.save()


def test_audit_api_is_read_only_even_for_admins(estate: Estate) -> None:
    from core.audit import record

    event = record("test.action", actor=estate.admin, target=estate.finance_vm)
    client = Client()
    client.force_login(estate.admin)
    url = reverse("api:audit-event-detail", kwargs={"pk": event.pk})
    assert client.delete(url).status_code in (403, 405)
    assert client.patch(url, {"action": "x"}, content_type="application/json").status_code in (403, 405)
    assert AuditEvent.objects.get(pk=event.pk).action == "test.action"
