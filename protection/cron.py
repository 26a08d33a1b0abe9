"""Cron schedules of policies: parsed and checked once (the scheduler, the protection states and the forms)."""

from __future__ import annotations

from celery.schedules import crontab


def parse_cron(text: str) -> crontab:
    """A five-field cron schedule (minute hour day-of-month month day-of-week); ValueError says what is wrong."""
    fields = text.split()
    if len(fields) != 5:
        raise ValueError("a cron schedule has five fields: minute hour day-of-month month day-of-week")
    minute, hour, day, month, weekday = fields
    try:
        return crontab(minute=minute, hour=hour, day_of_month=day, month_of_year=month, day_of_week=weekday)
    except (ValueError, KeyError, IndexError) as error:
        raise ValueError(f"not a valid cron schedule: {error}") from None


def normalise_cron(text: str) -> str:
    """A cron schedule with single spaces, checked ('' for none); ValueError says what is wrong."""
    value = " ".join(text.split())
    if value:
        parse_cron(value)
    return value
