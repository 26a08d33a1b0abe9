"""Use cases that change users, credentials and API tokens. Each one is audited."""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Iterable

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from core import audit
from core.choices import CredentialKind, Role
from core.crypto import rotate
from core.models import ApiToken, Credential, User

USER_AUDIT_FIELDS = ("username", "email", "first_name", "last_name", "role", "is_active", "machine_groups")
CREDENTIAL_AUDIT_FIELDS = ("name", "kind", "username", "secret_changed_at")
TOKEN_PREFIX = "bwk"  # noqa: S105  (a label that makes leaked tokens recognisable, not a secret)


class LastAdmin(ValueError):
    """The change would leave Bulwark without an active backup admin."""


@transaction.atomic
def create_user(
    *,
    actor: User | None,
    username: str,
    role: Role | str,
    password: str | None,
    is_active: bool = True,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    machine_groups: Iterable[object] = (),
) -> User:
    """Create an account; without a password it cannot sign in until one is set."""
    user = User(
        username=username,
        email=email,
        first_name=first_name,
        last_name=last_name,
        role=role,
        is_active=is_active,
    )
    if password:
        validate_password(password, user)
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    user.machine_groups.set(list(machine_groups))
    audit.record("user.create", actor=actor, target=user, after=audit.snapshot(user, USER_AUDIT_FIELDS))
    return user


@transaction.atomic
def update_user(
    *,
    actor: User | None,
    user: User,
    role: Role | str | None = None,
    is_active: bool | None = None,
    email: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    machine_groups: Iterable[object] | None = None,
    password: str | None = None,
    keep_api_tokens: bool = False,
) -> User:
    """Change an account's role, scope, status or details; a new password is validated and never audited.

    A new password revokes the user's API tokens (a stolen password may have minted them) unless the admin
    chooses to keep them. The last active backup admin can be neither demoted nor deactivated."""
    demoted = (role is not None and role != Role.ADMIN) or is_active is False
    if demoted and user.role == Role.ADMIN and user.is_active:
        others = User.objects.select_for_update().filter(role=Role.ADMIN, is_active=True).exclude(pk=user.pk)
        if not others.exists():
            raise LastAdmin(f"{user.username} is the last active backup admin: make another admin first")
    before = audit.snapshot(user, USER_AUDIT_FIELDS)
    for field, value in (
        ("role", role),
        ("is_active", is_active),
        ("email", email),
        ("first_name", first_name),
        ("last_name", last_name),
    ):
        if value is not None:
            setattr(user, field, value)
    if password:
        validate_password(password, user)
        user.set_password(password)
    user.save()
    if machine_groups is not None:
        user.machine_groups.set(list(machine_groups))
    after = audit.snapshot(user, USER_AUDIT_FIELDS)
    if password:
        after["password"] = "changed"  # noqa: S105  (records that it changed, never the value)
        if not keep_api_tokens:
            revoked = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            )
            after["api_tokens"] = f"{revoked} revoked" if revoked else "none to revoke"
        else:
            after["api_tokens"] = "kept"
    audit.record("user.update", actor=actor, target=user, before=before, after=after)
    return user


@transaction.atomic
def create_credential(
    *, actor: User | None, name: str, kind: CredentialKind | str, username: str, secret: str
) -> Credential:
    """Store a secret encrypted; it is never shown again."""
    credential = Credential(name=name, kind=kind, username=username, created_by=actor)
    credential.set_secret(secret)
    credential.save()
    audit.record(
        "credential.create",
        actor=actor,
        target=credential,
        after=audit.snapshot(credential, CREDENTIAL_AUDIT_FIELDS),
    )
    return credential


@transaction.atomic
def update_credential(
    *,
    actor: User | None,
    credential: Credential,
    name: str | None = None,
    username: str | None = None,
    secret: str | None = None,
) -> Credential:
    """Rename a credential, change its user name or replace its secret."""
    before = audit.snapshot(credential, CREDENTIAL_AUDIT_FIELDS)
    if name is not None:
        credential.name = name
    if username is not None:
        credential.username = username
    if secret is not None:
        credential.set_secret(secret)
    credential.save()
    after = audit.snapshot(credential, CREDENTIAL_AUDIT_FIELDS)
    audit.record("credential.update", actor=actor, target=credential, before=before, after=after)
    return credential


class CredentialInUse(Exception):
    """The credential is still used; str() names what uses it."""


def delete_credential(*, actor: User | None, credential: Credential) -> None:
    """Delete a credential nothing uses any more (a source or repository that uses it is named instead)."""
    from django.db.models import ProtectedError

    before = audit.snapshot(credential, CREDENTIAL_AUDIT_FIELDS)
    try:
        with transaction.atomic():
            credential.delete()
            audit.record("credential.delete", actor=actor, target=credential, before=before)
    except ProtectedError as error:
        users = sorted({f"{type(item)._meta.verbose_name} {item}" for item in error.protected_objects})
        raise CredentialInUse(f"{credential.name} is still used by {', '.join(users)}") from None


@transaction.atomic
def rotate_credentials(*, actor: User | None) -> int:
    """Re-encrypt every stored secret with the first configured key; returns how many were rewritten."""
    count = 0
    for credential in Credential.objects.select_for_update().order_by("pk"):
        credential.secret_encrypted = rotate(credential.secret_encrypted)
        credential.save(update_fields=["secret_encrypted"])
        count += 1
    audit.record("credential.rotate_keys", actor=actor, after={"rewritten": count})
    return count


def password_problems(password: str, *, user: User | None, username: str = "", email: str = "") -> list[str]:
    """Why a password is refused (empty when it is acceptable), judged against the account it is for."""
    candidate = user if user is not None else User(username=username, email=email)
    try:
        validate_password(password, candidate)
    except DjangoValidationError as error:
        return list(error.messages)
    return []


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@transaction.atomic
def create_api_token(
    *, actor: User, user: User, name: str, expires_at: datetime.datetime | None
) -> tuple[ApiToken, str]:
    """Issue an API token; the returned key is the only time it exists in clear."""
    prefix = secrets.token_hex(4)
    while ApiToken.objects.filter(prefix=prefix).exists():
        prefix = secrets.token_hex(4)
    key = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        user=user, name=name, prefix=prefix, digest=_digest(key), expires_at=expires_at
    )
    audit.record(
        "token.create",
        actor=actor,
        target=token,
        after={"user": user.pk, "name": name, "expires_at": expires_at.isoformat() if expires_at else None},
    )
    return token, key


def find_api_token(key: str) -> ApiToken | None:
    """The usable token for a presented key, or None (constant-time comparison of digests)."""
    parts = key.split("_", 2)  # the secret part may itself contain "_"
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    token = ApiToken.objects.select_related("user").filter(prefix=parts[1]).first()
    if token is None or not secrets.compare_digest(token.digest, _digest(key)) or not token.is_usable:
        return None
    return token


def touch_api_token(token: ApiToken) -> None:
    """Note when a token was last used, at most once a minute (no write per request)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > datetime.timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


@transaction.atomic
def revoke_api_token(*, actor: User, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record("token.revoke", actor=actor, target=token)
    return token
