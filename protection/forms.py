from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from inventory.choices import Platform
from inventory.models import Source
from protection.choices import RuleAction
from protection.models import Policy, ProtectionRule

CRITERIA = [
    "match_source",
    "match_platform",
    "match_name",
    "match_tags",
    "match_folder",
    "match_resource_pool",
    "match_host",
    "match_guest_os",
]


class PolicyForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = ["name", "description", "rpo_minutes", "enabled"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}
        labels = {"rpo_minutes": "RPO (minutes)"}


class RuleForm(forms.ModelForm):
    match_platform = forms.ChoiceField(
        choices=[("", "any"), *Platform.choices], required=False, label="Platform"
    )
    match_source = forms.ModelChoiceField(queryset=Source.objects.all(), required=False, label="Source")

    class Meta:
        model = ProtectionRule
        fields = ["name", "enabled", "action", "policy", "mode", *CRITERIA]
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
        if not any(data.get(name) for name in CRITERIA):
            raise ValidationError(
                "Set at least one criterion: a rule that matches everything is a policy default."
            )
        return data


class AssignForm(forms.Form):
    policy = forms.ModelChoiceField(
        queryset=Policy.objects.filter(enabled=True), required=False, empty_label="— let the rules decide —"
    )
    reason = forms.CharField(max_length=400, required=False)
