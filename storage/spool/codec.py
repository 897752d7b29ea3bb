"""Batch <-> bytes for the spool. JSON keeps the spool readable with the sqlite3 shell."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from gateway.model import (
    BalanceUpdate,
    Batch,
    Channel,
    DeadLetter,
    Event,
    EventKind,
    Kind,
    Quality,
    Reading,
    Relay,
    Severity,
    Source,
    Status,
)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _dec(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def _d(value: str | None) -> Decimal | None:
    return Decimal(value) if value is not None else None


def encode(batch: Batch) -> bytes:
    doc: dict[str, Any] = {
        "r": [[r.meter_id, r.channel.value, r.ts.isoformat(), r.value, r.kind.value, int(r.quality), r.status.value,
               r.source.value, _ts(r.received_at), r.note] for r in batch.readings],
        "b": [[b.meter_id, b.ts.isoformat(), str(b.balance), b.currency, _dec(b.emergency_credit),
               b.emergency_credit_in_use, _dec(b.debt), b.relay.value if b.relay else None,
               _dec(b.last_topup_amount), _ts(b.last_topup_ts), b.low_credit, b.credit_exhausted,
               _ts(b.received_at)] for b in batch.balances],
        "e": [[e.ts.isoformat(), e.meter_id, e.kind.value, e.severity.value, e.detail, e.acknowledged]
              for e in batch.events],
        "d": [[d.ts.isoformat(), d.source, d.where, d.reason, d.detail, d.payload, d.meter_id]
              for d in batch.deadletters],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Batch:
    doc = json.loads(data)
    return Batch(
        readings=[Reading(meter_id=r[0], channel=Channel(r[1]), ts=datetime.fromisoformat(r[2]), value=r[3],
                          kind=Kind(r[4]), quality=Quality(r[5]), status=Status(r[6]), source=Source(r[7]),
                          received_at=_dt(r[8]), note=r[9]) for r in doc["r"]],
        balances=[BalanceUpdate(meter_id=b[0], ts=datetime.fromisoformat(b[1]), balance=Decimal(b[2]), currency=b[3],
                                emergency_credit=_d(b[4]), emergency_credit_in_use=b[5], debt=_d(b[6]),
                                relay=Relay(b[7]) if b[7] else None, last_topup_amount=_d(b[8]),
                                last_topup_ts=_dt(b[9]), low_credit=b[10], credit_exhausted=b[11],
                                received_at=_dt(b[12])) for b in doc["b"]],
        events=[Event(ts=datetime.fromisoformat(e[0]), meter_id=e[1], kind=EventKind(e[2]), severity=Severity(e[3]),
                      detail=e[4], acknowledged=e[5]) for e in doc["e"]],
        deadletters=[DeadLetter(ts=datetime.fromisoformat(d[0]), source=d[1], where=d[2], reason=d[3], detail=d[4],
                                payload=d[5], meter_id=d[6]) for d in doc["d"]],
    )
