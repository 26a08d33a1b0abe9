from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from core import throttle
from core.choices import Role
from core.middleware import client_address
from core.models import User
from core.services import password_problems
from inventory.models import MachineGroup


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's sign-in form, refusing to even try once a user name or address has failed too often."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "locked_out": "Too many failed sign-ins. Wait a few minutes, then try again.",
    }

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) if self.request is not None else None
        if throttle.is_locked_out(username, address):
            raise ValidationError(self.error_messages["locked_out"], code="locked_out")
        return super().clean()


class UserForm(forms.Form):
    username = forms.CharField(max_length=150)
    first_name = forms.CharField(max_length=150, required=False)
    last_name = forms.CharField(max_length=150, required=False)
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=Role.choices)
    is_active = forms.BooleanField(required=False, initial=True, label="Active (may sign in)")
    machine_groups = forms.ModelMultipleChoiceField(
        queryset=MachineGroup.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Help-desk operators and owners see only the machines of these groups.",
    )
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        strip=False,
        help_text="At least 12 characters. Leave empty to keep the current password.",
    )
    keep_api_tokens = forms.BooleanField(
        required=False,
        label="Keep API tokens",
        help_text="A new password revokes this user's API tokens, unless you keep them here.",
    )

    def __init__(self, *args: Any, instance: User | None = None, **kwargs: Any) -> None:
        self.instance = instance
        if instance is not None:
            kwargs["initial"] = {
                "username": instance.username,
                "first_name": instance.first_name,
                "last_name": instance.last_name,
                "email": instance.email,
                "role": instance.role,
                "is_active": instance.is_active,
                "machine_groups": list(instance.machine_groups.all()),
                **(kwargs.get("initial") or {}),
            }
        super().__init__(*args, **kwargs)
        if instance is not None:
            self.fields["username"].disabled = True
        else:
            self.fields["password"].help_text = "At least 12 characters. Leave empty to set it later."
            del self.fields["keep_api_tokens"]  # a new user has no tokens yet

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"]
        if self.instance is None and User.objects.filter(username__iexact=username).exists():
            raise ValidationError("A user with this name already exists.")
        return username

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password = cleaned.get("password")
        if password:
            for problem in password_problems(
                password,
                user=self.instance,
                username=cleaned.get("username", ""),
                email=cleaned.get("email", ""),
            ):
                self.add_error("password", problem)
        return cleaned
