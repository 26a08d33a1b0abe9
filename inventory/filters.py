from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from inventory.choices import MachineKind, Platform
from inventory.models import Machine, MachineGroup, Source
from protection.choices import ProtectionState


def visible_groups(request: HttpRequest | None) -> QuerySet[MachineGroup]:
    """Only the groups this user may see are valid choices (another scope's group id is "not a choice")."""
    if request is None:
        return MachineGroup.objects.none()
    return MachineGroup.objects.visible_to(request.user)


def visible_sources(request: HttpRequest | None) -> QuerySet[Source]:
    """Sources of the machines this user may see (help-desk filters by source without reading source settings)."""
    if request is None:
        return Source.objects.none()
    return Source.objects.filter(pk__in=Machine.objects.visible_to(request.user).values("source"))


def visible_policies(request: HttpRequest | None) -> Any:
    from protection.models import Policy

    return Policy.objects.visible_to(request.user) if request is not None else Policy.objects.none()


class MachineFilter(django_filters.FilterSet):
    """Filters shared by the machines page and the machines API."""

    q = django_filters.CharFilter(method="filter_text", label="Search")
    kind = django_filters.ChoiceFilter(choices=MachineKind.choices, empty_label="any")
    platform = django_filters.ChoiceFilter(choices=Platform.choices, empty_label="any")
    group = django_filters.ModelChoiceFilter(field_name="groups", queryset=visible_groups, empty_label="any")
    gone = django_filters.BooleanFilter(field_name="gone_since", lookup_expr="isnull", exclude=True)
    owner = django_filters.CharFilter(lookup_expr="icontains")
    jurisdiction = django_filters.CharFilter(lookup_expr="iexact")
    state = django_filters.ChoiceFilter(
        choices=ProtectionState.choices, method="filter_state", empty_label="any", label="Protection"
    )
    policy = django_filters.ModelChoiceFilter(
        field_name="assignment__policy", queryset=visible_policies, empty_label="any"
    )
    source = django_filters.ModelChoiceFilter(queryset=visible_sources, empty_label="any")
    tag = django_filters.CharFilter(method="filter_tag")

    class Meta:
        model = Machine
        fields = [
            "q",
            "kind",
            "platform",
            "group",
            "gone",
            "owner",
            "jurisdiction",
            "state",
            "policy",
            "source",
            "tag",
        ]

    def filter_state(self, queryset: QuerySet[Machine], name: str, value: str) -> QuerySet[Machine]:
        """The protection state, as protection.states defines it (present machines only)."""
        from protection.states import states_for

        present = queryset.present()
        states = states_for(present.select_related("source"))
        return present.filter(pk__in=[pk for pk, info in states.items() if info.state == value])

    def filter_tag(self, queryset: QuerySet[Machine], name: str, value: str) -> QuerySet[Machine]:
        # JSON list membership, portable across SQLite and PostgreSQL: match the quoted element.
        return queryset.filter(tags__icontains=f'"{value}"')

    def filter_text(self, queryset: QuerySet[Machine], name: str, value: str) -> QuerySet[Machine]:
        return queryset.filter(
            Q(name__icontains=value)
            | Q(hostname__icontains=value)
            | Q(guest_os__icontains=value)
            | Q(owner__icontains=value)
        )
