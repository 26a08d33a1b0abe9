"""Machine groups by rule: a group holds exactly the machines its rule matches, kept up to date by discovery."""

from __future__ import annotations

import pytest

from inventory import services
from inventory.discovery import apply_changes
from inventory.models import Machine
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


def test_a_rule_group_holds_the_matching_machines_and_follows_renames(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    group = services.create_machine_group(actor=estate.admin, name="fin by rule", match_name="fin-*")
    assert set(group.machines.values_list("name", flat=True)) == {"fin-db-01", "fin-file-01"}
    # A rename seen by discovery moves the machine out of (or into) the group.
    from connectors.base import Change, DiscoveredMachine

    research = estate.research_vm
    source = services.create_source(
        actor=None, name="vc", kind="vcenter", address="vc.example", username="u", password="p"
    )
    Machine.objects.filter(pk=research.pk).update(source=source)
    renamed = DiscoveredMachine(
        identity=research.native_identity,
        external_id="vm-9",
        name="fin-gpu-07",
        kind="vm",
        platform="vsphere",
    )
    apply_changes(source, [Change(kind="upsert", machine=renamed)])
    assert group.machines.filter(pk=research.pk).exists()
    page = client_for("admin").get(f"/groups/{group.pk}/").content.decode()
    assert 'value="fin-*"' in page and "data-searchable" in page  # the rule, and a searchable list
    services.update_machine_group(actor=estate.admin, group=group, match_name="lab-*")
    assert not group.machines.exists()  # no machine is named lab-* any more
