"""Machines and machine groups through the API: scoped reads, admin writes, clear errors."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from inventory.models import Machine, MachineGroup
from tests.conftest import Estate


def signed_in(estate: Estate, role: str) -> Client:
    client = Client()
    client.force_login(estate.user(role))
    return client


def test_machine_list_filters_search_and_ordering(estate: Estate) -> None:
    client = signed_in(estate, "admin")
    url = reverse("api:machine-list")
    assert client.get(url, {"kind": "physical"}).json()["count"] == 1
    assert [m["name"] for m in client.get(url, {"q": "lab"}).json()["results"]] == ["lab-gpu-07"]
    assert client.get(url, {"group": estate.finance.pk}).json()["count"] == 2
    names = [m["name"] for m in client.get(url, {"ordering": "-name"}).json()["results"]]
    assert names == sorted(names, reverse=True)
    assert client.get(url, {"kind": "mainframe"}).status_code == 400


def test_another_scopes_group_is_not_a_valid_filter(estate: Estate) -> None:
    response = signed_in(estate, "helpdesk").get(reverse("api:machine-list"), {"group": estate.research.pk})
    assert response.status_code == 400
    assert "group" in response.json()


def test_detail_outside_scope_is_404_not_403(estate: Estate) -> None:
    client = signed_in(estate, "owner")
    assert client.get(reverse("api:machine-detail", kwargs={"pk": estate.research_vm.pk})).status_code == 404
    assert client.get(reverse("api:machine-detail", kwargs={"pk": 999999})).status_code == 404


def test_only_admins_change_machines_and_discovery_facts_stay_read_only(estate: Estate) -> None:
    url = reverse("api:machine-detail", kwargs={"pk": estate.finance_vm.pk})
    assert (
        signed_in(estate, "helpdesk").patch(url, {"owner": "me"}, content_type="application/json").status_code
        == 403
    )
    response = signed_in(estate, "admin").patch(
        url, {"name": "renamed", "identity": "x", "owner": "Finance IT"}, content_type="application/json"
    )
    assert response.status_code == 200
    machine = Machine.objects.get(pk=estate.finance_vm.pk)
    assert (machine.name, machine.owner) == ("fin-db-01", "Finance IT")


def test_malformed_payloads_get_400_with_field_errors_and_change_nothing(estate: Estate) -> None:
    client = signed_in(estate, "admin")
    url = reverse("api:machine-detail", kwargs={"pk": estate.finance_vm.pk})
    response = client.patch(url, {"groups": [987654]}, content_type="application/json")
    assert response.status_code == 400 and "groups" in response.json()
    response = client.patch(url, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert list(Machine.objects.get(pk=estate.finance_vm.pk).groups.all()) == [estate.finance]

    response = client.post(
        reverse("api:machine-group-list"), {"name": "finance"}, content_type="application/json"
    )
    assert response.status_code == 400 and "name" in response.json()
    response = client.post(
        reverse("api:machine-group-list"),
        {"name": "ops", "members": ["alice"]},
        content_type="application/json",
    )
    assert response.status_code == 400 and "members" in response.json()
    assert MachineGroup.objects.count() == 2


def test_user_api_validates_passwords_and_roles(estate: Estate) -> None:
    client = signed_in(estate, "admin")
    url = reverse("api:user-list")
    response = client.post(
        url, {"username": "new", "role": "god", "password": "short"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert set(response.json()) >= {"role"}
    response = client.post(
        url, {"username": "new", "role": "helpdesk", "password": "short"}, content_type="application/json"
    )
    assert response.status_code == 400 and "password" in response.json()
    response = client.post(
        url,
        {
            "username": "new",
            "role": "helpdesk",
            "password": "a-long-enough-passphrase",
            "machine_groups": [estate.finance.pk],
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert "password" not in response.json()
    me = Client()
    assert me.login(username="new", password="a-long-enough-passphrase")
    assert {m["name"] for m in me.get(reverse("api:machine-list")).json()["results"]} == {
        "fin-db-01",
        "fin-file-01",
    }


def test_schema_describes_the_api(estate: Estate) -> None:
    response = signed_in(estate, "owner").get(
        reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    assert response.status_code == 200
    schema = response.json()
    assert "/api/machines/" in schema["paths"]
    assert schema["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
