"""Timestamp: the one type of every time a client sends (query parameters and bodies).

Pydantic would take a number (or a numeric string such as "0.5") as seconds since 1970; a
client that sends one has almost always made a mistake (milliseconds, a local clock, a
float where a string was meant). Only ISO 8601 text is taken: a date, a time, and a zone.
A time without a zone passes here and is refused by api.params.utc, which names the parameter.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
#: A time whose offset lost its '+': in a URL query a '+' means a space, so an unencoded
#: 2026-03-01T00:00:00+03:00 arrives as "2026-03-01T00:00:00 03:00".
_PLUS_AS_SPACE = re.compile(r"(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}:?\d{2})$")


def _iso_text(value: object) -> object:
    if isinstance(value, str) and (lost := _PLUS_AS_SPACE.fullmatch(value.strip())):
        raise PydanticCustomError(
            "timestamp_plus", "'{value}' has a space where its offset's '+' belongs: in a URL a '+' means a space, "
            "so encode it as %2B ({time}%2B{offset}), or give the time in UTC with Z", {
                "value": value[:40], "time": lost[1], "offset": lost[2]})
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_8601.match(value)):
        return value
    raise PydanticCustomError(
        "timestamp_format", "must be an ISO 8601 date and time with a zone, as a string "
        "(e.g. 2026-03-01T00:00:00Z), not {kind}", {"kind": _kind(value)})


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "a number" if _number(value) else f"{value[:40]!r}"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, dict):
        return "an object"
    return "an array" if isinstance(value, list) else type(value).__name__


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: A time a client sends: ISO 8601 text only, never a number.
Timestamp = Annotated[datetime, BeforeValidator(_iso_text)]
