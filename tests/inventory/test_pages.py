"""The machines and machine-group pages, as each role sees them."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from inventory.models import MachineGroup
from tests.conftest import Estate
from tests.factories import MachineFactory


def signed_in(estate: Estate, role: str) -> Client:
    client = Client()
    client.force_login(estate.user(role))
    return client


def test_machine_list_shows_only_the_scope(estate: Estate) -> None:
    page = signed_in(estate, "helpdesk").get(reverse("machine-list")).content.decode()
    assert "fin-db-01" in page and "fin-file-01" in page
    assert "lab-gpu-07" not in page and "research" not in page


def test_machine_list_filters_and_paginates_on_the_server(estate: Estate) -> None:
    for number in range(60):
        MachineFactory(name=f"bulk-{number:02d}", groups=[estate.finance])
    client = signed_in(estate, "owner")
    first = client.get(reverse("machine-list")).content.decode()
    assert "Page 1 of 2" in first and "62 in all" in first
    assert "bulk-59" not in first
    second = client.get(reverse("machine-list"), {"page": 2}).content.decode()
    assert "bulk-59" in second
    filtered = client.get(reverse("machine-list"), {"q": "bulk-0", "sort": "-name"}).content.decode()
    assert filtered.index("bulk-09") < filtered.index("bulk-01")
    assert "fin-db-01" not in filtered


def test_empty_states_say_what_to_do(estate: Estate) -> None:
    page = signed_in(estate, "outsider").get(reverse("machine-list")).content.decode()
    assert "No machines in your scope" in page and "Ask a backup admin" in page
    dashboard = signed_in(estate, "outsider").get(reverse("dashboard")).content.decode()
    assert "No machines in your scope" in dashboard


def test_machine_detail_out_of_scope_is_not_found(estate: Estate) -> None:
    client = signed_in(estate, "helpdesk")
    assert client.get(reverse("machine-detail", kwargs={"pk": estate.finance_vm.pk})).status_code == 200
    response = client.get(reverse("machine-detail", kwargs={"pk": estate.research_vm.pk}))
    assert response.status_code == 404
    assert "lab-gpu-07" not in response.content.decode()


def test_dashboard_counts_are_scoped(estate: Estate) -> None:
    admin = signed_in(estate, "admin").get(reverse("dashboard"))
    assert admin.context["counts"] == {"machines": 3, "vms": 2, "physical": 1, "gone": 0}
    assert admin.context["admin_counts"]["ungrouped"] == 0
    owner = signed_in(estate, "owner").get(reverse("dashboard"))
    assert owner.context["counts"] == {"machines": 2, "vms": 1, "physical": 1, "gone": 0}
    assert "admin_counts" not in owner.context and "recent_events" not in owner.context


def test_admin_creates_a_group_and_scopes_a_user(estate: Estate) -> None:
    client = signed_in(estate, "admin")
    response = client.post(
        reverse("group-create"),
        {
            "name": "lab",
            "description": "Research lab",
            "members": [estate.outsider.pk],
            "machines": [estate.research_vm.pk],
        },
    )
    assert response.status_code == 302
    group = MachineGroup.objects.get(name="lab")
    assert list(group.members.all()) == [estate.outsider]
    page = signed_in(estate, "outsider").get(reverse("machine-list")).content.decode()
    assert "lab-gpu-07" in page
    duplicate = client.post(reverse("group-create"), {"name": "LAB"})
    assert duplicate.status_code == 200 and "already exists" in duplicate.content.decode()


def test_an_admin_cannot_demote_themselves(estate: Estate) -> None:
    client = signed_in(estate, "admin")
    response = client.post(
        reverse("user-edit", kwargs={"pk": estate.admin.pk}), {"role": "owner", "is_active": "on"}
    )
    assert response.status_code == 200
    assert "cannot remove your own admin role" in response.content.decode()


def test_an_inactive_user_is_created_in_one_audited_step(estate: Estate) -> None:
    from core.models import AuditEvent, User

    client = signed_in(estate, "admin")
    response = client.post(reverse("user-create"), {"username": "temp", "role": "helpdesk"})
    assert response.status_code == 302, response.content
    assert User.objects.get(username="temp").is_active is False
    events = AuditEvent.objects.filter(target_repr="temp")
    assert [(e.action, e.after["is_active"]) for e in events] == [("user.create", False)]
