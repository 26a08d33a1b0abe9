"""Template filters for people: durations as "1 h 12 min", not seconds; "due now", not "1 s ago"."""

from __future__ import annotations

import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def duration(seconds: float | int | None) -> str:
    """A human duration: "45 s", "3 min", "1 h 12 min", "2 days 4 h"; empty for None."""
    if seconds is None or seconds == "":
        return ""
    total = max(0, round(float(seconds)))
    if total < 60:
        return f"{total} s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


@register.filter
def is_due(moment: datetime.datetime | None) -> bool:
    """Whether a scheduled moment has come (within the scheduler's minute): "due now" rather than "1 s ago"."""
    return moment is not None and moment <= timezone.now() + datetime.timedelta(minutes=1)


@register.filter
def minutes(count: float | int | None) -> str:
    """A number of minutes as a human duration: 1440 → "24 h"."""
    return "" if count is None or count == "" else duration(float(count) * 60)


@register.filter
def tail_path(path: str, length: int = 60) -> str:
    """A long path by its end, which names the file: "…/guest-home/notes.txt"."""
    text = str(path)
    if len(text) <= int(length):
        return text
    cut = text[-int(length) :]
    return "…" + (cut[cut.index("/") :] if "/" in cut else cut)
