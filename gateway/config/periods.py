"""Periods in the configuration (retention, the billing estimate window): one small, strict syntax
that both PostgreSQL and Python read the same way. The configuration parses its own strings."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_PERIOD = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week)s?\s*$")


def parse_period(text: str) -> timedelta:
    """'400 days', '1 week', '12 hours', '90 minutes' -> timedelta; ValueError otherwise.

    Months and years are refused on purpose: PostgreSQL's '1 month' is a calendar month
    and Python has none, so the two stores would disagree about the cut-off.
    """
    match = _PERIOD.match(text.lower())
    if match is None or int(match[1]) <= 0:
        msg = f"{text!r} is not a period like '400 days', '8 weeks' or '12 hours' (units: minutes, hours, days, weeks)"
        raise ValueError(msg)
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


__all__ = ["parse_period"]
