"""API pagination with bounds: a limit or offset too large for the database is clamped, never a 500."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

# An offset past this is past any real table; SQLite and PostgreSQL both refuse integers beyond 2**63 - 1.
MAX_OFFSET = 2**53


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000

    def get_offset(self, request: Request) -> int:
        return min(super().get_offset(request), MAX_OFFSET)
