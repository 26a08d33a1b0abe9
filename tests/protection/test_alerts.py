"""Grouped alerts list only the machines a viewer may see; admins acknowledge (audited); filters."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from core.models import AuditEvent
from protection import services
from protection.choices import AlertKind
from protection.models import Alert
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


@pytest.fixture
def unprotected(estate: Estate, settings) -> Alert:  # type: ignore[no-untyped-def]
    settings.BULWARK_UNPROTECTED_GRACE_MINUTES = 0
    services.check_unprotected()
    return Alert.objects.open().get(kind=AlertKind.UNPROTECTED)


def api(estate: Estate, role: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(estate.user(role))
    return client


def test_a_grouped_alert_shows_each_viewer_only_their_machines(
    estate: Estate, unprotected: Alert, client_for
) -> None:  # type: ignore[no-untyped-def]
    assert unprotected.machines.count() == 3
    helpdesk = api(estate, "helpdesk").get("/api/alerts/").json()["results"]
    assert [m["machine_name"] for m in helpdesk[0]["machines"]] == ["fin-db-01", "fin-file-01"]
    admin = api(estate, "admin").get("/api/alerts/").json()["results"]
    assert len(admin[0]["machines"]) == 3
    assert api(estate, "outsider").get("/api/alerts/").json()["count"] == 0
    page = client_for("helpdesk").get("/alerts/").content.decode()
    assert "fin-db-01" in page and "lab-gpu-07" not in page and "2 machines" in page


def test_admins_acknowledge_and_it_is_audited(estate: Estate, unprotected: Alert, client_for) -> None:  # type: ignore[no-untyped-def]
    assert api(estate, "helpdesk").post(f"/api/alerts/{unprotected.pk}/acknowledge/").status_code == 403
    answer = api(estate, "admin").post(f"/api/alerts/{unprotected.pk}/acknowledge/")
    assert answer.status_code == 200 and answer.json()["acknowledged_by"] == "alice"
    assert AuditEvent.objects.filter(action="alert.acknowledge").count() == 1
    page = client_for("admin").get("/alerts/?state=unacknowledged").content.decode()
    assert "Nothing needs attention" not in page and "No alerts match" in page
    page = client_for("admin").get("/alerts/").content.decode()
    assert "acknowledged by alice" in page


def test_alerts_filter_by_machine_and_kind(estate: Estate, unprotected: Alert) -> None:
    services.raise_alert(
        kind=AlertKind.RUN_FAILED, key="run:1", message="backup failed", machine=estate.research_vm
    )
    client = api(estate, "admin")
    by_machine = client.get("/api/alerts/", {"machine": estate.finance_vm.pk}).json()
    assert [a["kind"] for a in by_machine["results"]] == ["unprotected"]  # listed by the grouped alert
    by_kind = client.get("/api/alerts/", {"kind": "run_failed"}).json()
    assert [a["message"] for a in by_kind["results"]] == ["backup failed"]
    assert api(estate, "helpdesk").get("/api/alerts/", {"machine": estate.research_vm.pk}).status_code == 400
