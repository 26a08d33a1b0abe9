"""The audit log page: a date range, a CSV export, and a diff that shows only what changed."""

from __future__ import annotations

import csv
import datetime
import io

import pytest
from django.utils import timezone

from core import audit
from core.models import AuditEvent
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


def test_dates_filter_and_csv_exports_what_is_shown(estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    audit.record(
        "machine.update",
        actor=estate.admin,
        target_repr="=HYPERLINK(evil)",
        before={"owner": "a", "site": "x"},
        after={"owner": "b", "site": "x"},
    )
    AuditEvent.objects.filter(action="machine.update").update(at=timezone.now() - datetime.timedelta(days=10))
    audit.record(
        "policy.update", actor=estate.admin, target_repr="gold", before={"rpo": 60}, after={"rpo": 90}
    )
    client = client_for("auditor")
    today = timezone.localdate().isoformat()
    page = client.get("/audit/", {"since": today}).content.decode()
    row = '<span class="action">{}</span>'.format
    assert row("policy.update") in page and row("machine.update") not in page
    old = client.get(
        "/audit/", {"until": (timezone.localdate() - datetime.timedelta(days=5)).isoformat()}
    ).content.decode()
    assert row("machine.update") in old and row("policy.update") not in old
    assert "site" not in old.split(row("machine.update"))[1].split("</td></tr>")[0]  # only what changed
    assert client.get("/audit/", {"since": "yesterday"}).status_code == 200  # not a date: ignored
    exported = client.get("/audit/", {"action": "machine."})
    answer = client.get("/audit/", {"action": "machine.", "format": "csv"})
    assert answer["Content-Type"].startswith("text/csv") and exported.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert rows[0][:5] == ["at", "who", "from", "action", "what"]
    assert [row[3] for row in rows[1:]] == ["machine.update"]
    assert rows[1][4] == "'=HYPERLINK(evil)"  # a spreadsheet never runs it
    assert client_for("helpdesk").get("/audit/", {"format": "csv"}).status_code == 403
