"""PAYG balance payloads (MQTT) → BalanceUpdate. Pure: no I/O, no clock (received_at is passed in).

Default layout (SPEC §3, domain notes §5)::

    {"ts": "2024-05-01T10:00:00Z" | 1714557600 | 1714557600000,
     "balance": 12.50 | "12.50", "currency": "KES",
     "emergency_credit": 5, "emergency_credit_in_use": false, "debt": 0,
     "relay": "connected" | "disconnected",
     "last_topup": {"amount": 100, "ts": ...}}

Other layouts are read through `mapping`: canonical field → JSON pointer (RFC 6901), e.g.
{"balance": "/data/credit", "ts": "/data/time"}; unmapped fields keep their default pointer.
A bare JSON number is a balance measured at `received_at`.

Money is never a float: JSON is parsed with parse_float=Decimal, so "10.10" stays Decimal("10.10").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.errors import PayloadError
from gateway.model.payg import BalanceUpdate, Relay

__all__ = ["DEFAULT_MAPPING", "REASONS", "parse_balance"]

#: Stable reason names carried by PayloadError.reason (the dead-letter list groups by them).
REASONS = frozenset(
    {"oversized", "malformed_json", "not_an_object", "missing_field", "wrong_type", "future_ts", "bad_timestamp"}
)

#: Canonical field → JSON pointer in the default layout.
DEFAULT_MAPPING: Mapping[str, str] = {
    "ts": "/ts",
    "balance": "/balance",
    "currency": "/currency",
    "emergency_credit": "/emergency_credit",
    "emergency_credit_in_use": "/emergency_credit_in_use",
    "debt": "/debt",
    "relay": "/relay",
    "last_topup_amount": "/last_topup/amount",
    "last_topup_ts": "/last_topup/ts",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Epoch numbers at or above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = Decimal(10) ** 11
_MISSING: Any = object()


def _show(value: Any, limit: int = 60) -> str:
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, Decimal):
        text = str(value)
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN / Infinity / -Infinity by default; they are not JSON.
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        msg = f"JSON pointer {pointer!r} must start with '/'"
        raise ValueError(msg)
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


class _Reader:
    """Reads canonical fields out of one decoded document; raises PayloadError with the place."""

    def __init__(self, doc: Any, topic: str, mapping: Mapping[str, str]) -> None:
        self.doc = doc
        self.topic = topic
        self.mapping = mapping

    def fail(self, reason: str, message: str) -> PayloadError:
        return PayloadError(self.topic, reason, message)

    def where(self, field: str) -> str:
        pointer = self.mapping[field]
        if pointer == DEFAULT_MAPPING.get(field):
            return f"field '{field}'"
        return f"field '{field}' ({pointer})"

    def get(self, field: str, *, required: bool = False) -> Any:
        """The raw value at the field's pointer; _MISSING if absent (or null and optional)."""
        node = self.doc
        walked = ""
        for part in _split_pointer(self.mapping[field]):
            if isinstance(node, dict):
                node = node.get(part, _MISSING)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, list):
                node = _MISSING
            else:
                msg = f"{self.where(field)}: {walked or 'the payload'} must be an object, got {_show(node)}"
                raise self.fail("wrong_type", msg)
            walked += "/" + part
            if node is _MISSING:
                break
        if node is None:
            node = _MISSING
        if node is _MISSING and required:
            raise self.fail("missing_field", f"{self.where(field)} is missing")
        return node

    def decimal(self, field: str, *, required: bool = False) -> Decimal | None:
        raw = self.get(field, required=required)
        if raw is _MISSING:
            return None
        value: Decimal | None = None
        if isinstance(raw, bool):
            value = None
        elif isinstance(raw, (int, Decimal)):
            value = Decimal(raw)
        elif isinstance(raw, str):
            try:
                value = Decimal(raw.strip())
            except InvalidOperation:
                value = None
        if value is None or not value.is_finite():
            raise self.fail("wrong_type", f"{self.where(field)} must be a number, got {_show(raw)}")
        return value

    def boolean(self, field: str) -> bool | None:
        raw = self.get(field)
        if raw is _MISSING:
            return None
        if not isinstance(raw, bool):
            raise self.fail("wrong_type", f"{self.where(field)} must be true or false, got {_show(raw)}")
        return raw

    def text(self, field: str) -> str | None:
        raw = self.get(field)
        if raw is _MISSING:
            return None
        if not isinstance(raw, str) or not raw.strip():
            raise self.fail("wrong_type", f"{self.where(field)} must be a non-empty string, got {_show(raw)}")
        return raw.strip()

    def relay(self, field: str) -> Relay | None:
        raw = self.get(field)
        if raw is _MISSING:
            return None
        try:
            return Relay(raw.strip().lower()) if isinstance(raw, str) else Relay(raw)
        except ValueError:
            allowed = " or ".join(f"'{r.value}'" for r in Relay)
            raise self.fail("wrong_type", f"{self.where(field)} must be {allowed}, got {_show(raw)}") from None

    def timestamp(self, field: str, *, required: bool = False) -> datetime | None:
        raw = self.get(field, required=required)
        if raw is _MISSING:
            return None
        if isinstance(raw, bool) or not isinstance(raw, (int, Decimal, str)):
            msg = f"{self.where(field)} must be an ISO 8601 string or epoch seconds/milliseconds, got {_show(raw)}"
            raise self.fail("wrong_type", msg)
        try:
            return _to_datetime(raw)
        except (ValueError, OverflowError, InvalidOperation):
            msg = f"{self.where(field)} is not an ISO 8601 time or epoch seconds/milliseconds: {_show(raw)}"
            raise self.fail("bad_timestamp", msg) from None


def _to_datetime(raw: int | Decimal | str) -> datetime:
    """ISO 8601 (naive = UTC) or epoch seconds / milliseconds (numbers or numeric strings) → aware UTC."""
    number: Decimal | None = None
    if isinstance(raw, str):
        stripped = raw.strip()
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            parsed = datetime.fromisoformat(stripped)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
    else:
        number = Decimal(raw)
    if not number.is_finite():
        msg = "not a finite number"
        raise ValueError(msg)
    if abs(number) >= _MS_THRESHOLD:
        number = number / 1000
    micros = int((number * 1_000_000).to_integral_value())
    return _EPOCH + timedelta(microseconds=micros)


def _decode(payload: bytes, topic: str) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"payload is not UTF-8 text (bad byte at offset {exc.start})"
        raise PayloadError(topic, "malformed_json", msg) from None
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        msg = f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise PayloadError(topic, "malformed_json", msg) from None
    except (ValueError, RecursionError) as exc:
        msg = f"payload is not valid JSON: {exc}" if isinstance(exc, ValueError) else "payload nests too deeply"
        raise PayloadError(topic, "malformed_json", msg) from None


def parse_balance(
    payload: bytes,
    topic: str,
    meter_id: str,
    *,
    received_at: datetime,
    low_credit_threshold: Decimal = Decimal("5"),
    mapping: Mapping[str, str] | None = None,
    max_bytes: int = 16384,
    max_future: timedelta = timedelta(minutes=5),
    currency: str = "XXX",
) -> BalanceUpdate:
    """Decode one PAYG balance message, or raise PayloadError(topic, reason, message).

    `reason` is one of REASONS. A timestamp later than received_at + max_future is rejected
    ("future_ts"): a meter with a runaway clock must not shadow every later update.
    `currency` is used when the payload names none (always for a bare number).
    """
    if len(payload) > max_bytes:
        msg = f"payload is {len(payload)} bytes, more than the {max_bytes} allowed"
        raise PayloadError(topic, "oversized", msg)
    fields = dict(DEFAULT_MAPPING)
    if mapping:
        unknown = sorted(set(mapping) - set(DEFAULT_MAPPING))
        if unknown:
            msg = f"unknown canonical field(s) in mapping: {', '.join(unknown)} (known: {', '.join(DEFAULT_MAPPING)})"
            raise ValueError(msg)
        for pointer in mapping.values():
            _split_pointer(pointer)  # raises ValueError on a malformed pointer: a config bug, not data
        fields.update(mapping)
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)

    doc = _decode(payload, topic)
    if isinstance(doc, (int, Decimal)) and not isinstance(doc, bool):
        return _build(meter_id, received_at, Decimal(doc), currency, received_at, low_credit_threshold)
    if not isinstance(doc, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(doc), "?")
        msg = f"payload must be a JSON object or a bare number, got {kind}"
        raise PayloadError(topic, "not_an_object", msg)

    r = _Reader(doc, topic, fields)
    balance = r.decimal("balance", required=True)
    assert balance is not None  # required=True raised otherwise
    ts = r.timestamp("ts", required=True)
    assert ts is not None
    if ts > received_at + max_future:
        msg = f"field 'ts' {ts.isoformat()} is more than {max_future.total_seconds():g} s after receipt ({received_at.isoformat()})"
        raise PayloadError(topic, "future_ts", msg)
    return _build(
        meter_id,
        ts,
        balance,
        (r.text("currency") or currency).upper(),
        received_at,
        low_credit_threshold,
        emergency_credit=r.decimal("emergency_credit"),
        emergency_credit_in_use=bool(r.boolean("emergency_credit_in_use")),
        debt=r.decimal("debt"),
        relay=r.relay("relay"),
        last_topup_amount=r.decimal("last_topup_amount"),
        last_topup_ts=r.timestamp("last_topup_ts"),
    )


def _build(
    meter_id: str,
    ts: datetime,
    balance: Decimal,
    currency: str,
    received_at: datetime,
    threshold: Decimal,
    **optional: Any,
) -> BalanceUpdate:
    return BalanceUpdate(
        meter_id=meter_id,
        ts=ts,
        balance=balance,
        currency=currency,
        low_credit=balance <= threshold,
        credit_exhausted=balance <= 0,
        received_at=received_at,
        **optional,
    )
