"""Logging filters (loaded by the logging configuration, before Django's apps: no Django imports here)."""

from __future__ import annotations


class OneLineClientErrors:
    """A logging filter: a refused request (4xx) is one line, never a traceback; only 5xx keep theirs."""

    def filter(self, record: object) -> bool:
        status = getattr(record, "status_code", None)
        if status is not None and 400 <= int(status) < 500:
            record.exc_info = None  # type: ignore[attr-defined]
            record.exc_text = None  # type: ignore[attr-defined]
        return True
