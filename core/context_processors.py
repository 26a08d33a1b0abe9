"""Navigation fitted to the signed-in user's role: only pages they may open are shown."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from core.access import ADMIN_ONLY, ALL_ROLES, AUDIT_READERS, FILE_RESTORERS, RESTORE_READERS

# (label, URL name, roles, URL names that mark the item as current)
NAVIGATION = [
    ("Dashboard", "dashboard", ALL_ROLES, {"dashboard"}),
    ("Machines", "machine-list", ALL_ROLES, {"machine-list", "machine-detail"}),
    ("Runs", "run-list", ALL_ROLES, {"run-list", "run-detail"}),
    ("Alerts", "alert-list", ALL_ROLES, {"alert-list"}),
    (
        "Files",
        "file-search",
        FILE_RESTORERS,
        {"file-search", "point-files", "file-history", "file-restore-wizard"},
    ),
    ("Restores", "restore-list", RESTORE_READERS, {"restore-list", "restore-detail"}),
    ("Sources", "source-list", ADMIN_ONLY, {"source-list", "source-create", "source-detail", "source-edit"}),
    ("Agents", "agent-list", ADMIN_ONLY, {"agent-list"}),
    ("Policies", "policy-list", ADMIN_ONLY, {"policy-list", "policy-create", "policy-edit"}),
    ("Storage", "repository-list", ADMIN_ONLY, {"repository-list"}),
    ("Rules", "rule-list", ADMIN_ONLY, {"rule-list", "rule-create", "rule-edit"}),
    ("Groups", "group-list", ADMIN_ONLY, {"group-list", "group-create", "group-edit"}),
    ("Users", "user-list", ADMIN_ONLY, {"user-list", "user-create", "user-edit"}),
    ("Audit", "audit-log", AUDIT_READERS, {"audit-log"}),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"navigation": []}
    current = request.resolver_match.url_name if request.resolver_match else None
    items = [
        {"label": label, "url_name": name, "current": current in marks}
        for label, name, roles, marks in NAVIGATION
        if user.role in roles
    ]
    return {"navigation": items}
