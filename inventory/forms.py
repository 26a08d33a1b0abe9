from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from core.models import User
from inventory.models import Machine, MachineGroup


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
        queryset=Machine.objects.present(), required=False, widget=forms.SelectMultiple(attrs={"size": 12})
    )

    def __init__(self, *args: Any, instance: MachineGroup | None = None, **kwargs: Any) -> None:
        self.instance = instance
        if instance is not None:
            kwargs["initial"] = {
                "name": instance.name,
                "description": instance.description,
                "members": list(instance.members.all()),
                "machines": list(instance.machines.all()),
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
