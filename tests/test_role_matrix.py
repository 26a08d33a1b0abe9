"""Every URL pattern and every WebSocket route, for every role and for anonymous visitors.

A new route without an entry here fails test_every_route_is_in_the_matrix: access rules are decided
deliberately, never by default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from config.asgi import application
from config.routing import websocket_urlpatterns
from core.services import create_api_token
from tests.conftest import Estate
from tests.peers import free_port

ROLES = ("anonymous", "admin", "helpdesk", "owner", "auditor")
PAGE_LOGIN = "login"  # expected outcome: redirect to the sign-in page

# Shorthands for GET expectations.
EVERYONE = {"anonymous": PAGE_LOGIN, "admin": 200, "helpdesk": 200, "owner": 200, "auditor": 200}
ADMIN_PAGE = {"anonymous": PAGE_LOGIN, "admin": 200, "helpdesk": 403, "owner": 403, "auditor": 403}
AUDIT_PAGE = {"anonymous": PAGE_LOGIN, "admin": 200, "helpdesk": 403, "owner": 403, "auditor": 200}
API_EVERYONE = {"anonymous": 401, "admin": 200, "helpdesk": 200, "owner": 200, "auditor": 200}
API_ADMIN = {"anonymous": 401, "admin": 200, "helpdesk": 403, "owner": 403, "auditor": 403}
API_AUDIT = {"anonymous": 401, "admin": 200, "helpdesk": 403, "owner": 403, "auditor": 200}
# Actions that only accept POST: GET is 405 for whoever gets past the role check.
POST_ONLY_ADMIN = {"anonymous": PAGE_LOGIN, "admin": 405, "helpdesk": 403, "owner": 403, "auditor": 403}
API_POST_ONLY_ADMIN = {"anonymous": 401, "admin": 405, "helpdesk": 403, "owner": 403, "auditor": 403}


@dataclass
class Entry:
    get: dict[str, Any]
    kwargs: Callable[[Estate], dict[str, Any]] = lambda estate: {}
    # (method, roles that may write): the others must get 401/403, these must get past the permission check.
    write: tuple[str, frozenset[str]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ADMIN_WRITES = frozenset({"admin"})
ALL_SIGNED_IN = frozenset({"admin", "helpdesk", "owner", "auditor"})

MATRIX: dict[str, Entry] = {
    # pages
    "dashboard": Entry(EVERYONE),
    "login": Entry({"anonymous": 200, "admin": 302, "helpdesk": 302, "owner": 302, "auditor": 302}),
    "logout": Entry({role: 405 for role in ROLES}, write=("post", frozenset(ROLES))),
    "health": Entry({role: 200 for role in ROLES}),
    "audit-log": Entry(AUDIT_PAGE),
    "user-list": Entry(ADMIN_PAGE),
    "user-create": Entry(ADMIN_PAGE, write=("post", ADMIN_WRITES)),
    "user-edit": Entry(ADMIN_PAGE, kwargs=lambda e: {"pk": e.helpdesk.pk}, write=("post", ADMIN_WRITES)),
    "machine-list": Entry(EVERYONE),
    "machine-detail": Entry(EVERYONE, kwargs=lambda e: {"pk": e.finance_vm.pk}),
    "group-list": Entry(ADMIN_PAGE),
    "group-create": Entry(ADMIN_PAGE, write=("post", ADMIN_WRITES)),
    "group-edit": Entry(ADMIN_PAGE, kwargs=lambda e: {"pk": e.finance.pk}, write=("post", ADMIN_WRITES)),
    "api-docs": Entry(EVERYONE),
    "api-schema": Entry(API_EVERYONE),
    # API
    "api:api-root": Entry(API_EVERYONE),
    "api:user-list": Entry(API_ADMIN, write=("post", ADMIN_WRITES)),
    "api:user-detail": Entry(
        API_ADMIN, kwargs=lambda e: {"pk": e.helpdesk.pk}, write=("patch", ADMIN_WRITES)
    ),
    "api:user-me": Entry(API_EVERYONE),
    "api:token-list": Entry(API_EVERYONE, write=("post", ALL_SIGNED_IN)),
    "api:token-detail": Entry(
        # Tokens are per person: the admin's token is theirs alone to read (others get 404, not 403).
        {"anonymous": 401, "admin": 200, "helpdesk": 404, "owner": 404, "auditor": 404},
        kwargs=lambda e: {
            "pk": create_api_token(actor=e.admin, user=e.admin, name="ci", expires_at=None)[0].pk
        },
    ),
    "api:credential-list": Entry(API_ADMIN, write=("post", ADMIN_WRITES)),
    "api:credential-detail": Entry(
        API_ADMIN, kwargs=lambda e: {"pk": e.extra_credential}, write=("patch", ADMIN_WRITES)
    ),
    "api:audit-event-list": Entry(API_AUDIT, write=("post", frozenset())),
    "api:audit-event-detail": Entry(API_AUDIT, kwargs=lambda e: {"pk": e.extra_audit_event}),
    "api:machine-group-list": Entry(API_EVERYONE, write=("post", ADMIN_WRITES)),
    "api:machine-group-detail": Entry(
        API_EVERYONE, kwargs=lambda e: {"pk": e.finance.pk}, write=("patch", ADMIN_WRITES)
    ),
    "alert-list": Entry(EVERYONE),
    "machine-bulk": Entry(POST_ONLY_ADMIN, write=("post", ADMIN_WRITES)),
    "alert-acknowledge": Entry(
        POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.alert}, write=("post", ADMIN_WRITES)
    ),
    "source-list": Entry(ADMIN_PAGE),
    "source-try": Entry(POST_ONLY_ADMIN, write=("post", ADMIN_WRITES)),
    "source-create": Entry(ADMIN_PAGE, write=("post", ADMIN_WRITES)),
    "source-detail": Entry(ADMIN_PAGE, kwargs=lambda e: {"pk": e.source}),
    "source-edit": Entry(ADMIN_PAGE, kwargs=lambda e: {"pk": e.source}, write=("post", ADMIN_WRITES)),
    "source-test": Entry(POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.source}, write=("post", ADMIN_WRITES)),
    "source-discover": Entry(
        POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.source}, write=("post", ADMIN_WRITES)
    ),
    "agent-list": Entry(ADMIN_PAGE, write=("post", ADMIN_WRITES)),
    "policy-list": Entry(ADMIN_PAGE),
    "policy-create": Entry(ADMIN_PAGE, write=("post", ADMIN_WRITES)),
    "policy-edit": Entry(ADMIN_PAGE, kwargs=lambda e: {"pk": e.policy}, write=("post", ADMIN_WRITES)),
    "repository-list": Entry(ADMIN_PAGE, write=("post", ADMIN_WRITES)),
    "rule-list": Entry(ADMIN_PAGE),
    "rule-create": Entry(ADMIN_PAGE, write=("post", ADMIN_WRITES)),
    "rule-preview": Entry(POST_ONLY_ADMIN, write=("post", ADMIN_WRITES)),
    "rule-edit": Entry(ADMIN_PAGE, kwargs=lambda e: {"pk": e.rule}, write=("post", ADMIN_WRITES)),
    "rule-move": Entry(POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.rule}, write=("post", ADMIN_WRITES)),
    "rule-delete": Entry(POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.rule}, write=("post", ADMIN_WRITES)),
    "run-list": Entry(EVERYONE),
    "run-bulk-cancel": Entry(POST_ONLY_ADMIN, write=("post", ADMIN_WRITES)),
    "policy-backup": Entry(POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.policy}, write=("post", ADMIN_WRITES)),
    "run-detail": Entry(EVERYONE, kwargs=lambda e: {"pk": e.run}),
    "run-status": Entry(EVERYONE, kwargs=lambda e: {"pk": e.run}),
    "run-cancel": Entry(POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.run}, write=("post", ADMIN_WRITES)),
    "machine-backup": Entry(
        POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.finance_vm.pk}, write=("post", ADMIN_WRITES)
    ),
    "api:run-list": Entry(API_EVERYONE),
    "api:run-detail": Entry(API_EVERYONE, kwargs=lambda e: {"pk": e.run}),
    "api:run-cancel": Entry(
        API_POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.run}, write=("post", ADMIN_WRITES)
    ),
    "machine-restore": Entry(
        POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.finance_vm.pk}, write=("post", ADMIN_WRITES)
    ),
    "restore-detail": Entry(EVERYONE, kwargs=lambda e: {"pk": e.restore}),
    # File restores: admins and help-desk operators (in scope); the matrix point holds images, so 404 there.
    # The catalog over the API: admins, auditors and help-desk (in scope); application owners do not search files.
    "catalog-search": Entry({"anonymous": 401, "admin": 400, "helpdesk": 400, "owner": 403, "auditor": 400}),
    "point-browse": Entry(
        {"anonymous": 401, "admin": 200, "helpdesk": 200, "owner": 403, "auditor": 200},
        kwargs=lambda e: {"pk": e.point},
    ),
    "file-versions": Entry(
        {"anonymous": 401, "admin": 200, "helpdesk": 200, "owner": 403, "auditor": 200},
        kwargs=lambda e: {"pk": e.file_version},
    ),
    "file-search": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 200, "helpdesk": 200, "owner": 403, "auditor": 403}
    ),
    "file-download": Entry(  # the matrix version's point has no stored snapshot: 503 past the checks
        {"anonymous": PAGE_LOGIN, "admin": 503, "helpdesk": 503, "owner": 403, "auditor": 403},
        kwargs=lambda e: {"pk": e.file_version},
    ),
    "point-files": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 200, "helpdesk": 200, "owner": 403, "auditor": 403},
        kwargs=lambda e: {"pk": e.point},
    ),
    "point-download": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 404, "helpdesk": 404, "owner": 403, "auditor": 403},
        kwargs=lambda e: {"pk": e.point},
    ),
    "point-restore-files": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 405, "helpdesk": 405, "owner": 403, "auditor": 403},
        kwargs=lambda e: {"pk": e.point},
        write=("post", frozenset({"admin", "helpdesk"})),
    ),
    # The restore history: everyone's for admins and auditors, one's own for the help desk.
    "restore-list": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 200, "helpdesk": 200, "owner": 403, "auditor": 200}
    ),
    # The wizard and the comparison need their query (a version, or a point and a path): without it, 404.
    "file-restore-wizard": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 404, "helpdesk": 404, "owner": 403, "auditor": 403},
        write=("post", frozenset({"admin", "helpdesk"})),
    ),
    "file-diff": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 404, "helpdesk": 404, "owner": 403, "auditor": 403}
    ),
    "file-history": Entry(
        {"anonymous": PAGE_LOGIN, "admin": 200, "helpdesk": 200, "owner": 403, "auditor": 403},
        kwargs=lambda e: {"pk": e.file_version},
    ),
    "restore-decide": Entry(
        POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.restore}, write=("post", ADMIN_WRITES)
    ),
    "restore-download": Entry(  # the matrix restore is not a download: 404 past the checks
        {"anonymous": PAGE_LOGIN, "admin": 404, "helpdesk": 404, "owner": 403, "auditor": 403},
        kwargs=lambda e: {"pk": e.restore},
    ),
    "restore-rule-edit": Entry(
        ADMIN_PAGE, kwargs=lambda e: {"pk": e.finance.pk}, write=("post", ADMIN_WRITES)
    ),
    "api:restore-list": Entry(API_EVERYONE, write=("post", ADMIN_WRITES)),
    "api:restore-approve": Entry(
        API_POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.restore}, write=("post", ADMIN_WRITES)
    ),
    "api:restore-refuse": Entry(
        API_POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.restore}, write=("post", ADMIN_WRITES)
    ),
    "file-restore": Entry(
        {"anonymous": 401, "admin": 405, "helpdesk": 405, "owner": 403, "auditor": 403},
        write=("post", frozenset({"admin", "helpdesk"})),
    ),
    "api:restore-detail": Entry(API_EVERYONE, kwargs=lambda e: {"pk": e.restore}),
    "machine-assign": Entry(
        POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.finance_vm.pk}, write=("post", ADMIN_WRITES)
    ),
    # Agents authenticate with their own key (or a one-time token), never as a user.
    "agent-enrol": Entry({role: 405 for role in ROLES}, write=("post", frozenset(ROLES))),
    "agent-heartbeat": Entry(
        {role: 405 for role in ROLES}, write=("post", frozenset()), extra={"refused": 401}
    ),
    "policy-copies": Entry(POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.policy}, write=("post", ADMIN_WRITES)),
    "api:copy-target-list": Entry(API_ADMIN, write=("post", ADMIN_WRITES)),
    "api:copy-target-detail": Entry(
        {"anonymous": 401, "admin": 200, "helpdesk": 403, "owner": 403, "auditor": 403},
        kwargs=lambda e: {"pk": e.copy_target},
        write=("delete", ADMIN_WRITES),
    ),
    "agent-jobs": Entry({role: 401 for role in ROLES}),
    "agent-run": Entry(
        {role: 405 for role in ROLES},
        kwargs=lambda e: {"pk": e.run, "step": "start"},
        write=("post", frozenset()),
        extra={"refused": 401},
    ),
    "agent-run-chunks": Entry(
        {role: 405 for role in ROLES},
        kwargs=lambda e: {"pk": e.run},
        write=("post", frozenset()),
        extra={"refused": 401},
    ),
    "agent-restore": Entry(
        {role: 401 for role in ROLES},
        kwargs=lambda e: {"pk": e.restore, "step": "start"},
        write=("post", frozenset()),
        extra={"refused": 401},
    ),
    "api:source-list": Entry(API_ADMIN, write=("post", ADMIN_WRITES)),
    "api:source-detail": Entry(API_ADMIN, kwargs=lambda e: {"pk": e.source}, write=("patch", ADMIN_WRITES)),
    "api:source-test": Entry(
        API_POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.source}, write=("post", ADMIN_WRITES)
    ),
    "api:source-discover": Entry(
        API_POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.source}, write=("post", ADMIN_WRITES)
    ),
    "api:discovery-run-list": Entry(API_ADMIN),
    "api:discovery-run-detail": Entry(API_ADMIN, kwargs=lambda e: {"pk": e.discovery_run}),
    "api:enrolment-token-list": Entry(API_ADMIN, write=("post", ADMIN_WRITES)),
    "api:enrolment-token-detail": Entry(API_ADMIN, kwargs=lambda e: {"pk": e.enrolment_token}),
    "api:policy-list": Entry(API_EVERYONE, write=("post", ADMIN_WRITES)),
    "api:policy-detail": Entry(
        API_EVERYONE, kwargs=lambda e: {"pk": e.policy}, write=("patch", ADMIN_WRITES)
    ),
    "api:rule-list": Entry(API_ADMIN, write=("post", ADMIN_WRITES)),
    "api:rule-detail": Entry(API_ADMIN, kwargs=lambda e: {"pk": e.rule}, write=("patch", ADMIN_WRITES)),
    "api:rule-dry-run": Entry(API_POST_ONLY_ADMIN, write=("post", ADMIN_WRITES)),
    "api:alert-list": Entry(API_EVERYONE),
    "api:alert-acknowledge": Entry(
        API_POST_ONLY_ADMIN, kwargs=lambda e: {"pk": e.alert}, write=("post", ADMIN_WRITES)
    ),
    "api:alert-detail": Entry(
        # An alert about a finance machine: in scope for help-desk and owner.
        API_EVERYONE,
        kwargs=lambda e: {"pk": e.alert},
    ),
    "api:machine-protection-detail": Entry(
        API_EVERYONE, kwargs=lambda e: {"pk": e.finance_vm.pk}, write=("patch", ADMIN_WRITES)
    ),
    "api:machine-history": Entry(API_EVERYONE, kwargs=lambda e: {"pk": e.finance_vm.pk}),
    "api:machine-list": Entry(API_EVERYONE, write=("post", frozenset())),
    "api:machine-detail": Entry(
        API_EVERYONE, kwargs=lambda e: {"pk": e.finance_vm.pk}, write=("patch", ADMIN_WRITES)
    ),
}

# WebSocket routes: roles whose socket is accepted.
WEBSOCKET_MATRIX: dict[str, frozenset[str]] = {
    "ws-events": ALL_SIGNED_IN,
}


def iter_url_names(patterns: list[Any], namespace: str | None = None) -> Iterator[str]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace
            joined = f"{namespace}:{inner}" if namespace and inner else inner or namespace
            yield from iter_url_names(pattern.url_patterns, joined)
        elif isinstance(pattern, URLPattern):
            assert pattern.name, f"URL pattern {pattern.pattern} has no name; every route needs one"
            yield f"{namespace}:{pattern.name}" if namespace else pattern.name


def test_every_route_is_in_the_matrix() -> None:
    names = set(iter_url_names(get_resolver().url_patterns))
    assert names - set(MATRIX) == set(), "routes without a role-matrix entry"
    assert set(MATRIX) - names == set(), "matrix entries for routes that no longer exist"
    ws_names = {pattern.name for pattern in websocket_urlpatterns}
    assert ws_names == set(WEBSOCKET_MATRIX)


@pytest.fixture
def matrix_estate(estate: Estate, tmp_path: Any, settings: Any) -> Estate:
    from core.models import AuditEvent
    from core.services import create_credential

    credential = create_credential(
        actor=estate.admin, name="vc", kind="vsphere", username="u", secret="s3cret-pw"
    )
    estate.extra_credential = credential.pk  # type: ignore[attr-defined]
    estate.extra_audit_event = AuditEvent.objects.latest("pk").pk  # type: ignore[attr-defined]
    from inventory.agents import create_enrolment_token
    from inventory.models import DiscoveryRun
    from inventory.services import create_source
    from protection import services as protection
    from protection.choices import AlertKind

    source = create_source(
        actor=estate.admin,
        name="vc-matrix",
        kind="vcenter",
        address="127.0.0.1",
        port=free_port(),
        username="u",
        password="p",
    )
    estate.source = source.pk  # type: ignore[attr-defined]
    estate.discovery_run = DiscoveryRun.objects.create(source=source, trigger="manual").pk  # type: ignore[attr-defined]
    estate.enrolment_token = create_enrolment_token(actor=estate.admin, label="matrix")[0].pk  # type: ignore[attr-defined]
    policy = protection.create_policy(actor=estate.admin, name="gold")
    estate.policy = policy.pk  # type: ignore[attr-defined]
    estate.rule = protection.create_rule(
        actor=estate.admin, name="fin", policy=policy, match_name="nothing-*"
    ).pk  # type: ignore[attr-defined]
    alert = protection.raise_alert(
        kind=AlertKind.UNPROTECTED, key="matrix", message="fin-db-01 unprotected", machine=estate.finance_vm
    )
    assert alert is not None
    estate.alert = alert.pk  # type: ignore[attr-defined]
    from catalog.services import create_repository
    from protection.models import BackupRun

    settings.DATA_DIR = tmp_path
    repository = create_repository(actor=estate.admin, name="primary", kind="local", path="repo")
    estate.run = BackupRun.objects.create(machine=estate.finance_vm, repository=repository).pk  # type: ignore[attr-defined]
    from django.utils import timezone

    from catalog.models import RecoveryPoint
    from restores.models import RestoreRequest

    point = RecoveryPoint.objects.create(
        machine=estate.finance_vm,
        repository=repository,
        snapshot_id="20261125T000000Z-0",
        taken_at=timezone.now(),
    )
    estate.point = point.pk  # type: ignore[attr-defined]
    from catalog.indexer import path_ids
    from catalog.models import FileVersion

    ids = path_ids(["/etc/app.conf", "/etc"])
    estate.file_version = FileVersion.objects.create(  # type: ignore[attr-defined]
        machine=estate.finance_vm,
        repository=repository,
        volume="2000:p1",
        path_id=ids["/etc/app.conf"],
        parent_id=ids["/etc"],
        kind="file",
        size=10,
        signature="s",
        first_point=point,
        last_point=point,
        first_at=point.taken_at,
        last_at=point.taken_at,
    ).pk
    from protection.models import CopyTarget, Policy

    copy_repository = create_repository(actor=estate.admin, name="offsite", kind="local", path="offsite")
    policy = Policy.objects.get(pk=estate.policy)  # type: ignore[attr-defined]
    estate.copy_target = CopyTarget.objects.create(policy=policy, repository=copy_repository).pk  # type: ignore[attr-defined]
    estate.restore = RestoreRequest.objects.create(  # type: ignore[attr-defined]
        machine=estate.finance_vm, point=point, kind="image_files", target="t"
    ).pk
    return estate


def _client(estate: Estate, role: str) -> Client:
    client = Client()
    if role != "anonymous":
        client.force_login(estate.user(role))
    return client


@pytest.mark.parametrize("name", sorted(MATRIX))
@pytest.mark.parametrize("role", ROLES)
def test_get(matrix_estate: Estate, name: str, role: str) -> None:
    entry = MATRIX[name]
    url = reverse(name, kwargs=entry.kwargs(matrix_estate))
    response = _client(matrix_estate, role).get(url)
    expected = entry.get[role]
    if expected == PAGE_LOGIN:
        assert response.status_code == 302, f"{role} GET {url}"
        assert response["Location"].startswith(reverse("login")), f"{role} GET {url} → {response['Location']}"
    else:
        assert response.status_code == expected, f"{role} GET {url}"


@pytest.mark.parametrize("name", sorted(n for n, e in MATRIX.items() if e.write))
@pytest.mark.parametrize("role", ROLES)
def test_write(matrix_estate: Estate, name: str, role: str) -> None:
    entry = MATRIX[name]
    assert entry.write is not None
    method, allowed = entry.write
    url = reverse(name, kwargs=entry.kwargs(matrix_estate))
    client = _client(matrix_estate, role)
    content_type = "application/json" if name.startswith("api:") else "application/x-www-form-urlencoded"
    response = getattr(client, method)(
        url, data="" if content_type.endswith("json") else {}, content_type=content_type
    )
    if role in allowed:
        # Past the permission check: the empty payload is then accepted or refused on its merits.
        assert response.status_code not in (401, 403, 405), (
            f"{role} {method.upper()} {url}: {response.status_code}"
        )
    elif role == "anonymous":
        assert response.status_code in (302, 401, 405), f"{role} {method.upper()} {url}"
        if response.status_code == 302:
            assert response["Location"].startswith(reverse("login"))
    else:
        refused = (403, 405, entry.extra.get("refused", 403))
        assert response.status_code in refused, f"{role} {method.upper()} {url}: {response.status_code}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", sorted(WEBSOCKET_MATRIX))
@pytest.mark.parametrize("role", ROLES)
async def test_websocket(estate: Estate, route: str, role: str) -> None:
    from asgiref.sync import sync_to_async

    path = "/" + next(str(p.pattern) for p in websocket_urlpatterns if p.name == route)
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if role != "anonymous":
        client = Client()
        await sync_to_async(client.force_login)(estate.user(role))
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected == (role in WEBSOCKET_MATRIX[route]), f"{role} on {path}"
    await communicator.disconnect()
