"""Fixtures shared by every test: one user per role and two scopes ("finance", in scope; "research", not)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from django.test import Client

from core.choices import Role
from core.models import User
from inventory.models import Machine, MachineGroup
from tests.factories import DiskFactory, MachineFactory, MachineGroupFactory, UserFactory
from tests.peers import free_port, port_open, require_peer, vcsim, vcsim_built, vcsim_factory  # noqa: F401  (re-exported for app tests)  # noqa: F401  (fixtures for every test folder)


@dataclass
class Estate:
    """A small estate: finance machines (seen by helpdesk and owner), research machines (seen by neither)."""

    admin: User
    helpdesk: User
    owner: User
    auditor: User
    outsider: User  # a help-desk operator in no group
    finance: MachineGroup
    research: MachineGroup
    finance_vm: Machine
    finance_host: Machine
    research_vm: Machine

    def user(self, role: str) -> User:
        return getattr(self, role)  # type: ignore[no-any-return]


@pytest.fixture
def estate(db: None) -> Estate:
    admin = UserFactory(username="alice", role=Role.ADMIN)
    helpdesk = UserFactory(username="hank", role=Role.HELPDESK)
    owner = UserFactory(username="olga", role=Role.OWNER)
    auditor = UserFactory(username="audrey", role=Role.AUDITOR)
    outsider = UserFactory(username="oscar", role=Role.HELPDESK)
    finance = MachineGroupFactory(name="finance", members=[helpdesk, owner])
    research = MachineGroupFactory(name="research")
    finance_vm = MachineFactory(name="fin-db-01", groups=[finance])
    finance_host = MachineFactory(
        name="fin-file-01", kind="physical", platform="agent", identity="agent:0f1e2d3c", groups=[finance]
    )
    research_vm = MachineFactory(name="lab-gpu-07", groups=[research])
    DiskFactory(machine=finance_vm, key="2000", label="Hard disk 1")
    DiskFactory(machine=research_vm, key="2000", label="Hard disk 1")
    return Estate(
        admin, helpdesk, owner, auditor, outsider, finance, research, finance_vm, finance_host, research_vm
    )


@pytest.fixture
def client_for(estate: Estate):  # type: ignore[no-untyped-def]
    """A test client signed in as the given role (or anonymous for None)."""

    def make(role: str | None) -> Client:
        client = Client()
        if role is not None:
            client.force_login(estate.user(role))
        return client

    return make


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """No persistent connections in tests: threads of the live server and of Channels would keep the test
    database open, and PostgreSQL refuses to drop a database that sessions still use."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def _test_settings(settings):  # type: ignore[no-untyped-def]
    # collectstatic has not run: serve static files from the source folders, unhashed.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # PBKDF2 with production iterations costs ~0.3 s per user; the tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # With REDIS_URL the cache is a real Redis that outlives the test: give each test its own key space so
    # counters (sign-in throttling) never leak from one test or run into the next.
    settings.CACHES = {
        alias: {**config, "KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}"}
        for alias, config in settings.CACHES.items()
    }
