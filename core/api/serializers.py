from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core import services
from core.choices import CredentialKind, Role
from core.models import ApiToken, AuditEvent, Credential, User
from inventory.models import MachineGroup


class UserSerializer(serializers.ModelSerializer):
    machine_groups = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=MachineGroup.objects.all()
    )
    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=False,
        style={"input_type": "password"},
        trim_whitespace=False,
    )
    keep_api_tokens = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="With a new password: keep the user's API tokens (by default a new password revokes them).",
    )

    role = serializers.ChoiceField(choices=Role.choices, help_text="What the person does in Bulwark.")

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "role",
            "is_active",
            "machine_groups",
            "password",
            "keep_api_tokens",
            "last_login",
            "date_joined",
        ]
        read_only_fields = ["last_login", "date_joined"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        password = attrs.get("password")
        if password:
            problems = services.password_problems(
                password, user=self.instance, username=attrs.get("username", ""), email=attrs.get("email", "")
            )
            if problems:
                raise serializers.ValidationError({"password": problems})
        return attrs

    def create(self, validated: dict[str, Any]) -> User:
        validated.pop("keep_api_tokens", None)
        validated.setdefault("password", None)  # no password yet: the account cannot sign in until one is set
        return services.create_user(actor=self.context["request"].user, **validated)

    def update(self, instance: User, validated: dict[str, Any]) -> User:
        validated.pop("username", None)  # user names are stable: the audit trail refers to them
        try:
            return services.update_user(actor=self.context["request"].user, user=instance, **validated)
        except services.LastAdmin as error:
            raise serializers.ValidationError({"role": [str(error)]}) from None


class ApiTokenSerializer(serializers.ModelSerializer):
    key = serializers.SerializerMethodField(help_text="The token itself; returned once, on creation.")

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at", "key"]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]

    def get_key(self, token: ApiToken) -> str | None:
        return getattr(token, "issued_key", None)

    def create(self, validated: dict[str, Any]) -> ApiToken:
        user = self.context["request"].user
        token, key = services.create_api_token(
            actor=user, user=user, name=validated["name"], expires_at=validated.get("expires_at")
        )
        token.issued_key = key  # type: ignore[attr-defined]
        return token


# Credentials that log in somewhere: a user name belongs with the secret.
LOGIN_KINDS = (CredentialKind.VSPHERE, CredentialKind.HYPERV, CredentialKind.SMB)


class CredentialSerializer(serializers.ModelSerializer):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only: stored encrypted and never returned.",
    )

    class Meta:
        model = Credential
        fields = ["id", "name", "kind", "username", "secret", "secret_changed_at", "created_at"]
        read_only_fields = ["secret_changed_at", "created_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is None and not attrs.get("secret"):
            raise serializers.ValidationError({"secret": ["This field is required."]})
        kind = attrs.get("kind") or (self.instance.kind if self.instance else "")
        if self.instance is None and kind in LOGIN_KINDS and not attrs.get("username"):
            raise serializers.ValidationError({"username": [f"A {kind} credential needs the user name."]})
        attrs.setdefault("username", self.instance.username if self.instance else "")
        if self.instance is not None and "kind" in attrs and attrs["kind"] != self.instance.kind:
            raise serializers.ValidationError({"kind": ["The kind of a credential cannot change."]})
        return attrs

    def create(self, validated: dict[str, Any]) -> Credential:
        return services.create_credential(actor=self.context["request"].user, **validated)

    def update(self, instance: Credential, validated: dict[str, Any]) -> Credential:
        validated.pop("kind", None)
        return services.update_credential(
            actor=self.context["request"].user, credential=instance, **validated
        )


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "actor",
            "actor_name",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "ip_address",
            "before",
            "after",
        ]
        read_only_fields = fields
