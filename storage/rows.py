"""Fast lookups from stored text and integers back to the model's enums (both stores).

Calling an Enum class (`Channel("power")`, `Quality(5)`) costs about half a microsecond;
a dict lookup is ten times cheaper, and a page of readings converts several of them per
row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from gateway.model import (
    Channel,
    CommandKind,
    CommandStatus,
    EventKind,
    Kind,
    MeterStatus,
    Protocol,
    Quality,
    Relay,
    Severity,
    Source,
    Status,
    Utility,
)

CHANNEL = {c.value: c for c in Channel}
KIND = {k.value: k for k in Kind}
STATUS = {s.value: s for s in Status}
SOURCE = {s.value: s for s in Source}
EVENT_KIND = {k.value: k for k in EventKind}
SEVERITY = {s.value: s for s in Severity}
RELAY = {r.value: r for r in Relay}
UTILITY = {u.value: u for u in Utility}
PROTOCOL = {p.value: p for p in Protocol}
METER_STATUS = {s.value: s for s in MeterStatus}
COMMAND_KIND = {k.value: k for k in CommandKind}
COMMAND_STATUS = {s.value: s for s in CommandStatus}
_QUALITY: dict[int, Quality] = {}
T = TypeVar("T")
U = TypeVar("U")
#: Rows converted between hand-backs of the event loop (a few milliseconds of Python).
CONVERT_PART = 1000


def quality(bits: int) -> Quality:
    """Quality(bits), memoised: a store holds only a few distinct combinations."""
    q = _QUALITY.get(bits)
    if q is None:
        q = _QUALITY[bits] = Quality(bits)
    return q


async def converted(found: Sequence[T], convert: Callable[[T], U]) -> list[U]:
    """`convert` of every row, handing the event loop back every CONVERT_PART rows: a page of
    10,000 readings is 60-100 ms of Python, and the pollers and every other request share the loop."""
    if len(found) <= CONVERT_PART:
        return [convert(r) for r in found]
    out: list[U] = []
    for start in range(0, len(found), CONVERT_PART):
        out += [convert(r) for r in found[start:start + CONVERT_PART]]
        await asyncio.sleep(0)
    return out
