"""Idempotency keys of events and dead letters.

Readings and balance updates have natural keys. Events and dead letters do not, so a
batch replayed after a crash between the sink's commit and the spool's delete would
store them twice. Each gets a digest of what identifies it; the table is unique on
(ts, ikey). The digest is md5 of UTF-8 text joined by U+001F, which PostgreSQL's md5()
computes identically, so a migration can fill it for rows written before it existed.
"""

from __future__ import annotations

import hashlib

from gateway.model import DeadLetter, Event

SEP = "\x1f"


def digest(*parts: str | None) -> str:
    text = SEP.join("" if p is None else p for p in parts)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def event_key(e: Event) -> str:
    """Same meter, kind and detail at the same ts: the same event."""
    return digest(e.meter_id, e.kind.value, e.detail)


def deadletter_key(d: DeadLetter) -> str:
    """Same origin, reason and payload at the same ts: the same dead letter (the detail
    may carry a server's wording, which can change between attempts, so it is left out)."""
    return digest(d.source, d.where, d.reason, d.payload, d.meter_id)
