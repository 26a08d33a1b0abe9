"""Filters by id accept only ids of objects the user may see.

An id of another scope and an id that does not exist get the same 400 ("not one of the available choices"):
a filter must not tell a help-desk operator which ids exist elsewhere.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request


def scope_choices(filterset: django_filters.FilterSet, user: Any) -> django_filters.FilterSet:
    """Narrow every model-choice filter of this filterset to what `user` may see (callables decide for
    themselves)."""
    for item in filterset.filters.values():
        if not isinstance(item, django_filters.ModelChoiceFilter | django_filters.ModelMultipleChoiceFilter):
            continue
        queryset = item.queryset
        if callable(queryset) or queryset is None:
            continue
        scoped = getattr(queryset.model._default_manager, "visible_to", None)
        if scoped is None:
            raise TypeError(
                f"{queryset.model.__name__} has no visible_to(user); a filter by its id would leak"
            )
        item.queryset = scoped(user)
    return filterset


class ScopedFilterBackend(DjangoFilterBackend):
    def get_filterset(self, request: Request, queryset: Any, view: Any) -> django_filters.FilterSet | None:
        filterset = super().get_filterset(request, queryset, view)
        return None if filterset is None else scope_choices(filterset, request.user)
