from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from catalog.choices import RepositoryKind, Tier
from catalog.models import Repository
from inventory.choices import Platform
from inventory.models import Source
from protection.choices import RuleAction
from protection.models import POLICY_FIELDS, RULE_CRITERIA, Policy, ProtectionRule, path_lines


def _or_invalid(clean: Callable[..., str], value: str, **options: Any) -> str:
    try:
        return clean(value, **options)
    except ValueError as error:
        raise ValidationError(str(error)) from None


class PolicyForm(forms.ModelForm):
    guest_username = forms.CharField(
        required=False,
        max_length=255,
        label="Guest login (vSphere scripts)",
        help_text="The user VMware Tools runs the scripts as inside the VM; empty: no guest scripts.",
    )
    guest_password = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.PasswordInput(render_value=False),
        label="Guest password",
        help_text="Stored encrypted; leave empty to keep the stored one.",
    )

    # The form's sections on the page: (title, hint, fields, laid out in a row).
    SECTIONS = [
        ("General", "", ["name", "description", "enabled", "repository", "mode", "priority"], False),
        (
            "Schedule",
            "A cron schedule replaces the interval. Backups start only inside the window, when one is set.",
            ["schedule_cron", "interval_minutes", "rpo_minutes", "window_start", "window_end"],
            False,
        ),
        (
            "Retention",
            "How many recovery points to keep: the newest, then one per day, week, month and year.",
            ["keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"],
            True,
        ),
        (
            "Consistency",
            "Scripts run on the Hyper-V host or the agent's host; in vSphere guests through VMware Tools, with the "
            "guest login.",
            ["quiesce", "pre_script", "post_script", "guest_username", "guest_password", "full_every_days"],
            False,
        ),
        ("Agent backups", "", ["include_paths", "exclude_patterns", "volumes", "dedup_location"], False),
        ("Limits", "", ["bandwidth_limit_mbps"], False),
    ]

    def sections(self) -> list[tuple[str, str, list[Any], bool]]:
        return [
            (title, hint, [self[name] for name in names], row) for title, hint, names, row in self.SECTIONS
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        credential = self.instance.guest_credential if self.instance.pk else None
        if credential is not None:
            self.fields["guest_username"].initial = credential.username

    class Meta:
        model = Policy
        fields = list(POLICY_FIELDS)  # shown in the order of SECTIONS
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "window_start": forms.TimeInput(attrs={"type": "time"}),
            "window_end": forms.TimeInput(attrs={"type": "time"}),
            "pre_script": forms.Textarea(attrs={"rows": 2, "class": "mono"}),
            "post_script": forms.Textarea(attrs={"rows": 2, "class": "mono"}),
            "include_paths": forms.Textarea(
                attrs={"rows": 3, "class": "mono", "placeholder": "/etc\n/srv/data"}
            ),
            "exclude_patterns": forms.Textarea(attrs={"rows": 2, "class": "mono", "placeholder": "*.tmp"}),
            "volumes": forms.Textarea(attrs={"rows": 2, "class": "mono", "placeholder": "/dev/sda"}),
        }
        labels = {
            "rpo_minutes": "RPO (minutes)",
            "interval_minutes": "Back up every (minutes)",
            "bandwidth_limit_mbps": "Bandwidth limit (Mbit/s per run)",
            "schedule_cron": "Cron schedule",
            "include_paths": "Paths (agent)",
            "exclude_patterns": "Exclusions (agent)",
            "volumes": "Whole volumes (agent)",
        }

    def clean_schedule_cron(self) -> str:
        from protection.cron import normalise_cron

        return _or_invalid(normalise_cron, self.cleaned_data.get("schedule_cron", ""))

    def clean_include_paths(self) -> str:
        return _or_invalid(path_lines, self.cleaned_data.get("include_paths", ""), absolute=True)

    def clean_volumes(self) -> str:
        return _or_invalid(path_lines, self.cleaned_data.get("volumes", ""), absolute=True)

    def clean_exclude_patterns(self) -> str:
        return _or_invalid(path_lines, self.cleaned_data.get("exclude_patterns", ""), absolute=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (data.get("window_start") is None) != (data.get("window_end") is None):
            raise ValidationError("Give both ends of the backup window, or neither.")
        if not any(
            data.get(k) for k in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
        ):
            raise ValidationError("The retention must keep something.")
        stored = self.instance.guest_credential if self.instance.pk else None
        if data.get("guest_username") and not data.get("guest_password") and stored is None:
            self.add_error("guest_password", "Give the guest login's password.")
        if data.get("mode") == "agent" and not (data.get("include_paths") or data.get("volumes")):
            raise ValidationError("An agent policy needs paths or volumes to back up.")
        return data


class RepositoryForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=RepositoryKind.choices)
    path = forms.CharField(
        max_length=1000,
        help_text="Local: a folder (relative paths are under the data folder). S3: bucket/prefix.",
    )
    endpoint = forms.URLField(
        required=False, assume_scheme="https", help_text="S3 endpoint URL; empty for AWS."
    )
    access_key = forms.CharField(required=False, max_length=255, label="S3 access key")
    secret_key = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False), label="S3 secret key"
    )
    tier = forms.ChoiceField(choices=Tier.choices, initial=Tier.PRIMARY)
    site = forms.CharField(required=False, max_length=64)
    jurisdiction = forms.CharField(required=False, max_length=64)
    immutable_days = forms.IntegerField(
        min_value=0,
        initial=0,
        help_text="S3 Object Lock retention in days (the bucket must have Object Lock).",
    )

    def clean_endpoint(self) -> str:
        from inventory.forms import outbound_allowed

        return outbound_allowed(self.cleaned_data.get("endpoint") or "")

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if Repository.objects.filter(name__iexact=name).exists():
            raise ValidationError("A repository with this name already exists.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("kind") == RepositoryKind.S3 and not (data.get("access_key") and data.get("secret_key")):
            self.add_error("access_key", "An S3 repository needs an access key and its secret.")
        if data.get("kind") == RepositoryKind.LOCAL and data.get("immutable_days"):
            self.add_error("immutable_days", "Only S3 repositories can be immutable (Object Lock).")
        return data


class RuleForm(forms.ModelForm):
    match_platform = forms.ChoiceField(
        choices=[("", "any"), *Platform.choices], required=False, label="Platform"
    )
    match_source = forms.ModelChoiceField(queryset=Source.objects.all(), required=False, label="Source")

    class Meta:
        model = ProtectionRule
        fields = ["name", "enabled", "action", "policy", "mode", *RULE_CRITERIA]
        labels = {
            "match_name": "Name pattern",
            "match_tags": "Tags",
            "match_folder": "Folder",
            "match_resource_pool": "Resource pool",
            "match_host": "Host or cluster",
            "match_guest_os": "Guest OS pattern",
        }
        help_texts = {
            "match_name": "Shell-style, case-insensitive; commas separate alternatives: erp-*, sap-??",
            "match_folder": "A folder and everything below it: /Production",
            "mode": "Assign only never takes a policy away; assign and remove follows the rule.",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") == RuleAction.INCLUDE and not data.get("policy"):
            self.add_error("policy", "An include rule needs the policy it assigns.")
        if data.get("action") == RuleAction.EXCLUDE:
            data["policy"] = None
        if not any(data.get(name) for name in RULE_CRITERIA):
            raise ValidationError(
                "Set at least one criterion: a rule that matches everything is a policy default."
            )
        return data


class AssignForm(forms.Form):
    policy = forms.ModelChoiceField(
        queryset=Policy.objects.filter(enabled=True), required=False, empty_label="— let the rules decide —"
    )
    reason = forms.CharField(max_length=400, required=False)


class CopyTargetForm(forms.Form):
    repository = forms.ModelChoiceField(
        queryset=Repository.objects.none(), help_text="Another tier, site or bucket."
    )
    keep_last = forms.IntegerField(min_value=0, max_value=1000, initial=3)
    keep_daily = forms.IntegerField(min_value=0, max_value=1000, initial=7)
    keep_weekly = forms.IntegerField(min_value=0, max_value=1000, initial=4)
    keep_monthly = forms.IntegerField(min_value=0, max_value=1000, initial=12)
    keep_yearly = forms.IntegerField(min_value=0, max_value=1000, initial=3)

    def __init__(self, *args: Any, policy: Policy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        taken = [policy.repository_id, *policy.copy_targets.values_list("repository_id", flat=True)]
        choices = Repository.objects.exclude(pk__in=[pk for pk in taken if pk])
        self.fields["repository"].queryset = choices  # type: ignore[attr-defined]
