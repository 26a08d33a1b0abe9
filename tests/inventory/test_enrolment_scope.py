"""An enrolment token reaches only what its issuer granted: it never takes over another scope's host."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from core.models import AuditEvent
from inventory import agents
from inventory.models import Agent, EnrolmentToken
from tests.conftest import Estate

pytestmark = pytest.mark.django_db


def _facts(machine_id: str, hostname: str = "host-x", **extra: Any) -> dict[str, Any]:
    return {"machine_id": machine_id, "hostname": hostname, **extra}


def _enrol(token: str, facts: dict[str, Any]) -> Any:
    return APIClient().post("/api/agent/enrol/", {"token": token, "facts": facts}, format="json")


def _enrolled_agent(estate: Estate) -> tuple[Agent, str]:
    _, token = agents.create_enrolment_token(
        actor=estate.admin, label="research rack", groups=[estate.research]
    )
    answer = _enrol(token, _facts("abcdef01", "lab-file-02"))
    assert answer.status_code == 201, answer.content
    agent = Agent.objects.get(machine_id=answer.json()["machine"])
    return agent, answer.json()["agent_key"]


def test_a_token_of_one_group_cannot_rekey_a_host_of_another(estate: Estate) -> None:
    victim, victim_key = _enrolled_agent(estate)  # a research host with its own agent
    token_row, token = agents.create_enrolment_token(
        actor=estate.admin, label="finance", groups=[estate.finance]
    )

    answer = _enrol(token, _facts("ABCDEF01", "innocent-name"))  # the victim's machine id, other case

    assert answer.status_code == 409
    assert "outside this token's groups" in answer.json()["detail"]
    victim.refresh_from_db()
    assert agents.authenticate(victim_key) == victim  # the victim's agent keeps working
    assert list(victim.machine.groups.all()) == [estate.research]  # not pulled into finance
    assert victim.machine.name == "lab-file-02"
    refused = AuditEvent.objects.get(action="agent.enrol_refused")
    assert refused.after["machine_id"] == "abcdef01"
    token_row.refresh_from_db()
    assert token_row.used_at is None  # still good for the host it was meant for


def test_a_token_of_no_group_cannot_rekey_an_enrolled_host(estate: Estate) -> None:
    _enrolled_agent(estate)
    _, token = agents.create_enrolment_token(actor=estate.admin, label="anything")
    assert _enrol(token, _facts("abcdef01")).status_code == 409


def test_a_host_inside_the_token_groups_re_enrols(estate: Estate) -> None:
    victim, old_key = _enrolled_agent(estate)
    _, token = agents.create_enrolment_token(
        actor=estate.admin, label="research again", groups=[estate.research, estate.finance]
    )
    answer = _enrol(token, _facts("abcdef01", "lab-file-02"))
    assert answer.status_code == 201
    assert answer.json()["machine"] == victim.machine_id
    assert agents.authenticate(old_key) is None
    assert agents.authenticate(answer.json()["agent_key"]) is not None


def test_an_admin_re_enrols_a_host_with_a_token_issued_for_it(estate: Estate) -> None:
    victim, _ = _enrolled_agent(estate)
    _, token = agents.create_enrolment_token(actor=estate.admin, label="reinstall", machine=victim.machine)

    # The machine-bound token enrols that host only.
    assert _enrol(token, _facts("someone-else")).status_code == 409
    answer = _enrol(token, _facts("abcdef01", "lab-file-02"))
    assert answer.status_code == 201
    assert answer.json()["machine"] == victim.machine_id


def test_only_admins_issue_a_token_for_an_existing_host(estate: Estate) -> None:
    victim, _ = _enrolled_agent(estate)
    for role, expected in (("helpdesk", 403), ("admin", 201)):
        client = APIClient()
        client.force_authenticate(estate.user(role))
        answer = client.post(
            "/api/enrolment-tokens/", {"label": "re-key", "machine": victim.machine_id}, format="json"
        )
        assert answer.status_code == expected, answer.content
    assert EnrolmentToken.objects.get(label="re-key").machine == victim.machine


@pytest.mark.parametrize(
    "facts",
    [
        {"heartbeat_seconds": "abc"},
        {"ip_addresses": 5},
        {"ip_addresses": ["not an address"]},
        {"disks": [1]},
        {"disks": [{"device": "/dev/sda", "size_bytes": "big"}]},
        {"volumes": "all"},
        {"cpus": 10**30},
    ],
)
def test_facts_of_the_wrong_type_are_a_400_naming_the_field(estate: Estate, facts: dict[str, Any]) -> None:
    _, token = agents.create_enrolment_token(actor=estate.admin, label="typed")
    answer = _enrol(token, _facts("typed01", **facts))
    assert answer.status_code == 400, answer.content
    assert set(answer.json()["facts"]) == set(facts)

    _, key = _enrolled_agent(estate)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Agent {key}")
    beat = client.post("/api/agent/heartbeat/", {"facts": _facts("abcdef01", **facts)}, format="json")
    assert beat.status_code == 400, beat.content
    assert set(beat.json()["facts"]) == set(facts)
