"""Durations read as people say them."""

from __future__ import annotations

import pytest

from core.templatetags.bulwark import duration


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (None, ""),
        (0, "0 s"),
        (44.6, "45 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (4320, "1 h 12 min"),
        (7200, "2 h"),
        (47 * 3600 + 60, "47 h 1 min"),
        (2 * 86400 + 4 * 3600, "2 days 4 h"),
        (3 * 86400, "3 days"),
    ],
)
def test_durations_are_human(seconds: float | None, words: str) -> None:
    assert duration(seconds) == words
