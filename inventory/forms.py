from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from core.models import User
from inventory.choices import HyperVTransport, Platform, SourceKind
from inventory.models import Machine, MachineGroup, Source


class MachineGroupForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    members = forms.ModelMultipleChoiceField(
        queryset=User.objects.filter(is_active=True),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="People who see this group's machines.",
    )
    machines = forms.ModelMultipleChoiceField(
        queryset=Machine.objects.present(),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 12, "data-searchable": "true"}),
        help_text="Type in the search box above the list to find machines; or fill in a rule below instead.",
    )
    match_name = forms.CharField(
        max_length=500, required=False, label="Rule: name", help_text="Shell patterns, e.g. fin-*, erp-??"
    )
    match_folder = forms.CharField(
        max_length=500,
        required=False,
        label="Rule: folder",
        help_text="e.g. /Finance (and every folder below)",
    )
    match_tags = forms.CharField(
        max_length=500, required=False, label="Rule: tag", help_text="e.g. dept:finance"
    )

    def __init__(self, *args: Any, instance: MachineGroup | None = None, **kwargs: Any) -> None:
        self.instance = instance
        if instance is not None:
            kwargs["initial"] = {
                "name": instance.name,
                "description": instance.description,
                "members": list(instance.members.all()),
                "machines": list(instance.machines.all()),
                "match_name": instance.match_name,
                "match_folder": instance.match_folder,
                "match_tags": instance.match_tags,
                **(kwargs.get("initial") or {}),
            }
        super().__init__(*args, **kwargs)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        clash = MachineGroup.objects.filter(name__iexact=name)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError("A group with this name already exists.")
        return name


class SourceForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=SourceKind.choices)
    address = forms.CharField(
        max_length=255, help_text="Host name or IP address of the vCenter, ESXi or Hyper-V host."
    )
    port = forms.IntegerField(
        required=False, min_value=1, max_value=65535, help_text="Empty: 443, or 5986 / 5985 for WinRM."
    )
    username = forms.CharField(max_length=255)
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted, never shown again. Leave empty to keep the current one.",
    )
    verify_tls = forms.BooleanField(required=False, initial=True, label="Verify the certificate")
    thumbprint = forms.CharField(
        max_length=100,
        required=False,
        label="Pinned SHA-256 fingerprint",
        help_text="For a self-signed certificate: the fingerprint the server presents.",
    )
    ca_certificate = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Extra CA certificate (PEM)"
    )
    transport = forms.ChoiceField(
        choices=HyperVTransport.choices,
        required=False,
        initial=HyperVTransport.NTLM,
        label="WinRM authentication (Hyper-V)",
    )
    https = forms.BooleanField(required=False, initial=True, label="WinRM over HTTPS (Hyper-V)")
    site = forms.CharField(max_length=64, required=False)
    jurisdiction = forms.CharField(
        max_length=64, required=False, help_text="Given to discovered machines that have none."
    )
    discovery_interval_minutes = forms.IntegerField(
        min_value=5, max_value=7 * 24 * 60, initial=60, label="Discover every (minutes)"
    )
    watch = forms.BooleanField(required=False, initial=True, label="Follow changes live (vSphere)")
    enabled = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, instance: Source | None = None, **kwargs: Any) -> None:
        self.instance = instance
        if instance is not None:
            kwargs["initial"] = {
                "name": instance.name,
                "kind": instance.kind,
                "address": instance.address,
                "port": instance.port,
                "username": instance.credential.username,
                "verify_tls": instance.verify_tls,
                "thumbprint": instance.thumbprint,
                "ca_certificate": instance.ca_certificate,
                "transport": instance.options.get("transport", HyperVTransport.NTLM),
                "https": instance.options.get("https", True),
                "site": instance.site,
                "jurisdiction": instance.jurisdiction,
                "discovery_interval_minutes": instance.discovery_interval_minutes,
                "watch": instance.watch,
                "enabled": instance.enabled,
                **(kwargs.get("initial") or {}),
            }
        super().__init__(*args, **kwargs)

    def clean_address(self) -> str:
        return outbound_allowed(self.cleaned_data["address"].strip())

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        clash = Source.objects.filter(name__iexact=name)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise ValidationError("A source with this name already exists.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance is None and not data.get("password"):
            self.add_error("password", "A new source needs the password.")
        if data.get("kind") == SourceKind.HYPERV:
            data["options"] = {
                "transport": data.get("transport") or HyperVTransport.NTLM,
                "https": bool(data.get("https")),
            }
            if data["options"]["transport"] == HyperVTransport.BASIC and not data["options"]["https"]:
                self.add_error("transport", "Basic authentication is only allowed over HTTPS.")
        else:
            data["options"] = {}
        return data

    def source_fields(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        for key in ("transport", "https"):
            data.pop(key, None)
        if not data.get("password"):
            data.pop("password", None)
        return data


def outbound_allowed(address: str) -> str:
    """The address, unless this console's outbound policy denies it (a form or API field error then)."""
    from django.conf import settings

    from connectors.outbound import OutboundDenied, check

    try:
        check(address, settings.BULWARK_OUTBOUND_NETWORKS)
    except OutboundDenied as error:
        raise ValidationError(str(error)) from None
    return address


class EnrolmentTokenForm(forms.Form):
    label = forms.CharField(max_length=100, help_text="Which host or batch of hosts this token is for.")
    hours = forms.IntegerField(min_value=1, max_value=24 * 30, initial=24, label="Valid for (hours)")
    groups = forms.ModelMultipleChoiceField(
        queryset=MachineGroup.objects.all(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Machine groups the enrolled host joins.",
    )
    machine = forms.ModelChoiceField(
        queryset=Machine.objects.filter(platform=Platform.AGENT),
        required=False,
        label="Re-enrol host",
        empty_label="— a new host —",
        help_text="To re-key an existing agent host (reinstalled, or its key lost), pick it here: the token then "
        "enrols that host only. A token for a new host never takes over an enrolled one outside its groups.",
    )
