"""visible_to(user) is the one place that decides which rows a person sees."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from core.models import ApiToken, AuditEvent, Credential, User
from core.services import create_api_token, create_credential
from inventory.models import Disk, Machine, MachineGroup
from tests.conftest import Estate
from tests.factories import MachineFactory


def names(queryset) -> set[str]:  # type: ignore[no-untyped-def]
    return {str(row) for row in queryset}


def test_admin_and_auditor_see_every_machine(estate: Estate) -> None:
    everything = {"fin-db-01", "fin-file-01", "lab-gpu-07"}
    assert names(Machine.objects.visible_to(estate.admin)) == everything
    assert names(Machine.objects.visible_to(estate.auditor)) == everything


@pytest.mark.parametrize("role", ["helpdesk", "owner"])
def test_scoped_roles_see_only_their_groups_machines(estate: Estate, role: str) -> None:
    assert names(Machine.objects.visible_to(estate.user(role))) == {"fin-db-01", "fin-file-01"}
    assert names(Disk.objects.visible_to(estate.user(role))) == {"fin-db-01 / Hard disk 1"}
    assert names(MachineGroup.objects.visible_to(estate.user(role))) == {"finance"}


def test_a_machine_in_two_of_my_groups_appears_once(estate: Estate) -> None:
    estate.research.members.add(estate.helpdesk)
    estate.finance_vm.groups.add(estate.research)
    visible = Machine.objects.visible_to(estate.helpdesk)
    assert visible.count() == 3
    assert visible.filter(name="fin-db-01").count() == 1
    # Still chainable: ordering and aggregation on top of the scoped queryset work.
    assert visible.order_by("-name").values_list("name", flat=True).first() == "lab-gpu-07"


def test_no_group_no_machines(estate: Estate) -> None:
    assert not Machine.objects.visible_to(estate.outsider).exists()
    assert not Disk.objects.visible_to(estate.outsider).exists()


def test_anonymous_and_deactivated_users_see_nothing(estate: Estate) -> None:
    estate.admin.is_active = False
    estate.admin.save()
    for user in (AnonymousUser(), estate.admin, None):
        assert not Machine.objects.visible_to(user).exists()
        assert not AuditEvent.objects.visible_to(user).exists()
        assert not Credential.objects.visible_to(user).exists()


def test_removing_a_member_from_a_group_takes_effect_at_once(estate: Estate) -> None:
    estate.finance.members.remove(estate.helpdesk)
    assert not Machine.objects.visible_to(estate.helpdesk).exists()


def test_new_machines_in_a_group_become_visible(estate: Estate) -> None:
    MachineFactory(name="fin-app-02", groups=[estate.finance])
    assert "fin-app-02" in names(Machine.objects.visible_to(estate.owner))


def test_administrative_rows(estate: Estate) -> None:
    create_credential(actor=estate.admin, name="vcenter", kind="vsphere", username="svc", secret="pw-123456")
    create_api_token(actor=estate.helpdesk, user=estate.helpdesk, name="script", expires_at=None)
    create_api_token(actor=estate.admin, user=estate.admin, name="admin-script", expires_at=None)
    assert Credential.objects.visible_to(estate.admin).count() == 1
    for role in ("helpdesk", "owner", "auditor"):
        assert not Credential.objects.visible_to(estate.user(role)).exists()
    assert names(ApiToken.objects.visible_to(estate.helpdesk)).pop().startswith("script")
    assert ApiToken.objects.visible_to(estate.admin).count() == 2
    assert AuditEvent.objects.visible_to(estate.auditor).exists()
    assert not AuditEvent.objects.visible_to(estate.helpdesk).exists()
    assert set(User.objects.visible_to(estate.owner)) == {estate.owner}
