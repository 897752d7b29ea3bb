"""Retention periods as PostgreSQL reads them (the configuration parses them: gateway.config.periods)."""

from __future__ import annotations

from datetime import timedelta


def as_sql_interval(period: timedelta) -> str:
    """The period as a PostgreSQL interval literal, in whole seconds."""
    return f"{int(period.total_seconds())} seconds"
