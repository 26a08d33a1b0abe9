"""Filters shared by the alerts page and the alerts API."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from inventory.models import Machine
from protection.choices import AlertKind, Severity
from protection.models import Alert


def visible_machines(request: HttpRequest | None) -> QuerySet[Machine]:
    return Machine.objects.visible_to(request.user) if request is not None else Machine.objects.none()


class AlertFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=AlertKind.choices, empty_label="any kind")
    severity = django_filters.ChoiceFilter(choices=Severity.choices, empty_label="any severity")
    state = django_filters.ChoiceFilter(
        choices=[("open", "open"), ("unacknowledged", "open, not acknowledged"), ("resolved", "resolved")],
        method="filter_state",
        empty_label="any state",
    )
    machine = django_filters.ModelChoiceFilter(queryset=visible_machines, method="filter_machine")
    q = django_filters.CharFilter(method="filter_text", label="Machine or text")

    class Meta:
        model = Alert
        fields = ["kind", "severity", "state", "machine", "q"]

    def filter_state(self, queryset: QuerySet[Alert], name: str, value: str) -> QuerySet[Alert]:
        if value == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        queryset = queryset.filter(resolved_at__isnull=True)
        return queryset.filter(acknowledged_at__isnull=True) if value == "unacknowledged" else queryset

    def filter_machine(self, queryset: QuerySet[Alert], name: str, value: Any) -> QuerySet[Alert]:
        return queryset.filter(Q(machine=value) | Q(entries__machine=value)).distinct()

    def filter_text(self, queryset: QuerySet[Alert], name: str, value: str) -> QuerySet[Alert]:
        visible = visible_machines(self.request).filter(name__icontains=value)
        return queryset.filter(
            Q(message__icontains=value) | Q(machine__in=visible) | Q(entries__machine__in=visible)
        ).distinct()
