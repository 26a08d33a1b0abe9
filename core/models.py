"""People, the audit log, encrypted credentials and API tokens."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models
from django.utils import timezone

from core.choices import GLOBAL_ROLES, CredentialKind, Role
from core.querysets import AdminOnlyQuerySet, AuditQuerySet, OwnedQuerySet, is_active_user


class BulwarkUserManager(UserManager):
    def create_superuser(self, username, email=None, password=None, **extra_fields):  # type: ignore[no-untyped-def]
        extra_fields.setdefault("role", Role.ADMIN)
        return super().create_superuser(username, email, password, **extra_fields)

    def visible_to(self, user: object) -> models.QuerySet[User]:
        """Admins see every account; everyone else only their own."""
        if not is_active_user(user):
            return self.none()
        if user.role == Role.ADMIN:  # type: ignore[attr-defined]
            return self.all()
        return self.filter(pk=user.pk)  # type: ignore[attr-defined]


class User(AbstractUser):
    """A person who signs in. The role says what they may do; machine groups say on which machines."""

    # The least privileged role is the default: a new account sees nothing until it is given groups.
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OWNER)

    objects = BulwarkUserManager()

    class Meta:
        ordering = ["username"]

    @property
    def is_backup_admin(self) -> bool:
        return self.is_active and self.role == Role.ADMIN

    @property
    def sees_all_machines(self) -> bool:
        return self.is_active and self.role in GLOBAL_ROLES

    @property
    def may_read_audit(self) -> bool:
        return self.is_active and self.role in GLOBAL_ROLES


class AuditEvent(models.Model):
    """One state-changing action: who, what, when, from where, and the state before and after.

    Append-only: rows are never updated or deleted by the application.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # Kept as text too, so the log still names the person after their account is deleted.
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True, db_index=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=255, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action} {self.target_repr}"

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.pk is not None:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)


class Credential(models.Model):
    """A secret Bulwark uses to reach something (vCenter, Hyper-V, S3, a repository passphrase).

    The secret is stored encrypted with the credential key from settings and is never shown again after it is
    saved: only connectors and the engine read it, through reveal().
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=CredentialKind.choices)
    username = models.CharField(max_length=255, blank=True)
    secret_encrypted = models.TextField(editable=False)
    secret_changed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Credential {self.pk} {self.name!r} kind={self.kind}>"

    def set_secret(self, plaintext: str) -> None:
        from core.crypto import encrypt

        self.secret_encrypted = encrypt(plaintext)
        self.secret_changed_at = timezone.now()

    def reveal(self) -> str:
        from core.crypto import decrypt

        return decrypt(self.secret_encrypted)


class ApiToken(models.Model):
    """A bearer token for the API. Only a SHA-256 digest is stored; the key is shown once, on creation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
