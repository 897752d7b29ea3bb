"""Batch <-> bytes for the spool. JSON keeps the spool readable with the sqlite3 shell.

Every record is a flat JSON array (no keys), enums by value, timestamps ISO 8601 with
their offset, money as decimal text. Decoding looks enums up in dicts and builds the
dataclasses positionally: the spool sits on the hot path of every accepted item, and
this halves its cost against calling the Enum classes with keywords.

`encode` takes any batch: text is written as UTF-8, and a batch holding a lone surrogate (which
UTF-8 cannot encode; normalise refuses them, this is the last line) as ASCII with \\u escapes,
which decode back to the same text. A store then refuses that row, and the forwarder sets it aside.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.model import BalanceUpdate, Batch, DeadLetter, Event, Reading
from storage import rows as enums

_iso = datetime.fromisoformat
#: What a dead letter keeps of an undecodable row's bytes.
PAYLOAD_KEEP = 2048


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return _iso(value) if value is not None else None


def _dec(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def _d(value: str | None) -> Decimal | None:
    return Decimal(value) if value is not None else None


def encode(batch: Batch) -> bytes:
    # The readings of a poll share received_at, the polls of a round their ts: each distinct timestamp
    # is formatted once (isoformat was a third of the cost of encoding a pass of polls).
    # By identity, not equality: equal times in other zones must keep their own offset. The batch holds
    # every datetime while this runs, so no id is reused meanwhile.
    stamps: dict[int, str] = {}

    def iso(value: datetime) -> str:
        found = stamps.get(id(value))
        if found is None:
            found = stamps[id(value)] = value.isoformat()
        return found

    doc: dict[str, Any] = {
        # _value_, not .value: on Python 3.11 .value is a descriptor call, four times the cost.
        "r": [[r.meter_id, r.channel._value_, iso(r.ts), r.value, r.kind._value_, int(r.quality), r.status._value_,
               r.source._value_, None if r.received_at is None else iso(r.received_at), r.note]
              for r in batch.readings],
        "b": [[b.meter_id, b.ts.isoformat(), str(b.balance), b.currency, _dec(b.emergency_credit),
               b.emergency_credit_in_use, _dec(b.debt), b.relay.value if b.relay else None,
               _dec(b.last_topup_amount), _ts(b.last_topup_ts), b.low_credit, b.credit_exhausted,
               _ts(b.received_at)] for b in batch.balances],
        "e": [[e.ts.isoformat(), e.meter_id, e.kind.value, e.severity.value, e.detail, e.acknowledged]
              for e in batch.events],
        "d": [[d.ts.isoformat(), d.source, d.where, d.reason, d.detail, d.payload, d.meter_id]
              for d in batch.deadletters],
    }  # fmt: skip
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Batch:
    doc = json.loads(data)
    channel, kind, status, source, quality = enums.CHANNEL, enums.KIND, enums.STATUS, enums.SOURCE, enums.quality
    return Batch(
        # Positional: meter_id, channel, ts, value, kind, quality, status, source, received_at, seq, note.
        readings=[Reading(r[0], channel[r[1]], _iso(r[2]), r[3], kind[r[4]], quality(r[5]), status[r[6]],
                          source[r[7]], None if r[8] is None else _iso(r[8]), None, r[9]) for r in doc["r"]],
        balances=[BalanceUpdate(b[0], _iso(b[1]), Decimal(b[2]), b[3], _d(b[4]), b[5], _d(b[6]),
                                enums.RELAY[b[7]] if b[7] else None, _d(b[8]), _dt(b[9]), b[10], b[11],
                                _dt(b[12])) for b in doc["b"]],
        events=[Event(_iso(e[0]), e[1], enums.EVENT_KIND[e[2]], enums.SEVERITY[e[3]], e[4], e[5]) for e in doc["e"]],
        deadletters=[DeadLetter(_iso(d[0]), d[1], d[2], d[3], d[4], d[5], d[6]) for d in doc["d"]],
    )  # fmt: skip


def undecodable(row_id: int, body: object, created: object, exc: Exception) -> Batch:
    """What takes the place of spool row `row_id` whose bytes do not decode: a dead letter with the row's
    id and bytes (shown safely, truncated). The same each time the row is read (its ts is the row's), so
    the store keeps it once."""
    data = body if isinstance(body, bytes) else b""
    ts = datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else datetime.now(UTC)
    detail = f"spool row {row_id} could not be decoded: {type(exc).__name__}: {exc}"
    return Batch(deadletters=[DeadLetter(ts=ts, source="spool", where=f"spool row {row_id}",
                                         reason="spool_undecodable", detail=_printable(detail)[:500],
                                         payload=_shown(data))])


def _printable(text: str) -> str:
    """NUL is the one character PostgreSQL text cannot hold; show it escaped instead."""
    return text.replace("\x00", "\\x00")


def _shown(data: bytes) -> str:
    """Bytes as a dead letter's payload: UTF-8 where they are, escapes where not, truncated."""
    text = _printable(data[:PAYLOAD_KEEP].decode("utf-8", errors="backslashreplace"))
    return text if len(data) <= PAYLOAD_KEEP else f"{text}... ({len(data)} bytes)"
