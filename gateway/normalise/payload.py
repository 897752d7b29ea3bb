"""PAYG balance payloads (MQTT) → BalanceUpdate. Pure: no I/O, no clock (received_at is passed in).

Default JSON layout (SPEC §3, domain notes §5)::

    {"ts": "2024-05-01T10:00:00Z" | 1714557600 | 1714557600000,
     "balance": 12.50 | "12.50", "currency": "KES",
     "emergency_credit": 5, "emergency_credit_in_use": false, "debt": 0,
     "relay": "connected" | "disconnected",
     "last_topup": {"amount": 100, "ts": ...}}

Other layouts are read through `mapping`: canonical field → JSON pointer (RFC 6901), e.g.
{"balance": "/data/credit", "ts": "/data/time"}; unmapped fields keep their default pointer.
With format "number" the payload is a bare number: the balance, measured at `received_at`.
Timestamps are ISO 8601 or epoch seconds / milliseconds; `timestamp` says which ("auto" tells
them apart: strings are ISO 8601, numbers of 1e11 and more are milliseconds) or "received" to
ignore the payload's clock and use the time of receipt.

Money is never a float: JSON is parsed with parse_float=Decimal, so "10.10" stays Decimal("10.10").
A vendor's own words for the relay and emergency credit are read through `value_maps`
({"relay": {"closed": "connected", "open": "disconnected"}}, keys lowercased); a value the map lacks
is refused ("unmapped_value") with the value and the map's keys. Money sent in minor units is
multiplied by `scales` ({"balance": Decimal("0.01")}) exactly.

Whatever the bytes, `parse` returns a BalanceUpdate or raises PayloadError, nothing else. What
no store can hold is refused here, with its field named: a timestamp outside the years 1-9999
("bad_timestamp"), an amount PostgreSQL's numeric cannot hold exactly ("bad_number": more than
131,072 digits before the decimal point or 16,383 after, e.g. ``1e1000000``; SQLite keeps the
text), text with a NUL or a lone surrogate ("bad_text"). These are limits of representation,
not of plausibility.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Literal

from gateway.errors import PayloadError
from gateway.model.payg import BalanceUpdate, Relay
from gateway.model.payloads import (
    DEFAULT_MAPPING,
    check_scales,
    resolve_mapping,
    resolve_value_maps,
    split_pointer,
    value_key,
)
from gateway.model.text import unstorable_at
from gateway.normalise.plausibility import ahead, too_deep

__all__ = [
    "DEFAULT_MAPPING",
    "FORMATS",
    "REASONS",
    "TIMESTAMPS",
    "PayloadFormat",
    "parse_balance",
    "resolve_mapping",
]

#: Stable reason names carried by PayloadError.reason (the dead-letter list groups by them).
REASONS = frozenset(
    {"oversized", "malformed_json", "not_an_object", "missing_field", "wrong_type", "future_ts", "bad_timestamp",
     "bad_text", "bad_number", "unmapped_value", "implausible_ts"}
)

Format = Literal["json", "number", "wmbusmeters"]
Timestamp = Literal["auto", "iso8601", "epoch_s", "epoch_ms", "received"]
FORMATS: tuple[Format, ...] = ("json", "number", "wmbusmeters")
TIMESTAMPS: tuple[Timestamp, ...] = ("auto", "iso8601", "epoch_s", "epoch_ms", "received")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Epoch numbers at or above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = Decimal(10) ** 11
#: No epoch number this large is a date (the year 9999 ends at 2.5e11 s, 2.5e14 ms): refused before
#: any arithmetic, which on 1e1000000 would overflow the decimal context or build a huge integer.
_EPOCH_LIMIT = Decimal(10) ** 15
#: PostgreSQL numeric (the narrower store): at most this many digits before the decimal point...
_MAX_INTEGER_DIGITS = 131_072
#: ...and this many after it.
_MAX_FRACTION_DIGITS = 16_383
_MISSING: Any = object()
_TS_EXPECTED = {
    "auto": "an ISO 8601 string or epoch seconds/milliseconds",
    "iso8601": "an ISO 8601 string",
    "epoch_s": "epoch seconds",
    "epoch_ms": "epoch milliseconds",
}


def _show(value: Any, limit: int = 60) -> str:
    """A value as a message quotes it: repr escapes NUL and surrogates, so the message is storable."""
    if isinstance(value, str):
        text = repr(value[: limit + 2])
    elif isinstance(value, Decimal):
        text = str(value)
    else:
        try:
            text = json.dumps(value, default=str)
        except (RecursionError, ValueError):  # nested about as deep as the decoder allows
            return _kind(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN / Infinity / -Infinity by default; they are not JSON.
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class PayloadFormat:
    """How the payloads of one topic template are written; checked once, used per message."""

    format: Format = "json"
    #: Canonical field → JSON pointer, overriding DEFAULT_MAPPING field by field.
    mapping: Mapping[str, str] = field(default_factory=dict)
    timestamp: Timestamp = "auto"
    max_bytes: int = 16384
    #: A ts later than receipt + max_future is rejected ("future_ts").
    max_future: timedelta = timedelta(minutes=5)
    #: Field -> the vendor's word (any case) -> canonical word (gateway.model.payloads.resolve_value_maps).
    value_maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Money field -> exact factor (minor units: 0.01).
    scales: Mapping[str, Decimal] = field(default_factory=dict)
    _pointers: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _maps: dict[str, dict[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.format not in FORMATS:
            problems.append(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.timestamp not in TIMESTAMPS:
            problems.append(f"timestamp must be one of {', '.join(TIMESTAMPS)}, got {self.timestamp!r}")
        if self.max_bytes < 1:
            problems.append(f"max_bytes must be >= 1, got {self.max_bytes}")
        if self.max_future < timedelta(0):
            problems.append(f"max_future must be >= 0, got {self.max_future}")
        try:
            fields = resolve_mapping(self.mapping)
        except ValueError as exc:
            problems.append(str(exc))
            fields = dict(DEFAULT_MAPPING)
        maps: dict[str, dict[str, str]] = {}
        try:
            maps = resolve_value_maps(self.value_maps)
            check_scales(self.scales)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            msg = "payload format: " + "; ".join(problems)
            raise ValueError(msg)
        object.__setattr__(self, "_pointers", {name: split_pointer(p) for name, p in fields.items()})
        object.__setattr__(self, "_maps", maps)

    def scaled(self, name: str, value: Decimal, where: str, topic: str) -> Decimal:
        """`value` times the field's scale, exactly (the context holds every digit of the product)."""
        factor = self.scales.get(name)
        if factor is None:
            return value
        digits = len(value.as_tuple().digits) + len(factor.as_tuple().digits)
        return _storable_amount(Context(prec=digits + 1).multiply(value, factor), where, topic)

    def pointer(self, name: str) -> str:
        return self.mapping.get(name, DEFAULT_MAPPING[name])

    def parse(
        self,
        payload: bytes,
        topic: str,
        meter_id: str,
        *,
        received_at: datetime,
        low_credit_threshold: Decimal = Decimal("5"),
        currency: str = "XXX",
        max_ahead: timedelta | None = None,
    ) -> BalanceUpdate:
        """Decode one message, or raise PayloadError(topic, reason, message); see parse_balance.
        `max_ahead`: [plausibility] max_ahead (beyond it a ts is implausible_ts, before max_future)."""
        if len(payload) > self.max_bytes:
            msg = f"payload is {len(payload)} bytes, more than the {self.max_bytes} allowed"
            raise PayloadError(topic, "oversized", msg)
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        doc = _decode(payload, topic)
        if self.format == "number":
            if isinstance(doc, (int, Decimal)) and not isinstance(doc, bool):
                amount = self.scaled("balance", _storable_amount(Decimal(doc), "the payload", topic), "the payload",
                                     topic)
                return _build(meter_id, received_at, amount, currency, received_at, low_credit_threshold)
            msg = f"payload must be a bare number (format 'number'), got {_kind(doc)}"
            raise PayloadError(topic, "wrong_type", msg)
        if isinstance(doc, (int, Decimal)) and not isinstance(doc, bool):
            # Valid JSON and unambiguous: a meter that sends only its balance.
            amount = self.scaled("balance", _storable_amount(Decimal(doc), "the payload", topic), "the payload", topic)
            return _build(meter_id, received_at, amount, currency, received_at, low_credit_threshold)
        if not isinstance(doc, dict):
            msg = f"payload must be a JSON object or a bare number, got {_kind(doc)}"
            raise PayloadError(topic, "not_an_object", msg)

        r = _Reader(doc, topic, self)
        balance = r.decimal("balance", required=True)
        assert balance is not None  # required=True raised otherwise
        if self.timestamp == "received":
            ts = received_at
        else:
            found = r.timestamp("ts", self.timestamp, required=True)
            assert found is not None
            ts = found
        refused = ahead(r.where("ts"), ts, received_at, max_ahead, self.max_future)
        if refused is not None:
            raise PayloadError(topic, refused.reason, str(refused))
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
            # The top-up's own time is read in "auto" when the message's clock is ignored.
            last_topup_ts=r.timestamp("last_topup_ts", "auto" if self.timestamp == "received" else self.timestamp),
        )


def _storable_amount(value: Decimal, where: str, topic: str) -> Decimal:
    """`value` if PostgreSQL's numeric holds it exactly; PayloadError "bad_number" if not."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: checked by the callers
    if value.adjusted() >= _MAX_INTEGER_DIGITS or exponent < -_MAX_FRACTION_DIGITS:
        msg = (f"{where} {_show(value)} cannot be stored exactly (at most {_MAX_INTEGER_DIGITS} digits before "
               f"the decimal point and {_MAX_FRACTION_DIGITS} after)")
        raise PayloadError(topic, "bad_number", msg)
    return value


def _kind(doc: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null", dict: "an object"}
    return kinds.get(type(doc), "a number")


class _Reader:
    """Reads canonical fields out of one decoded document; raises PayloadError with the place."""

    def __init__(self, doc: Any, topic: str, fmt: PayloadFormat) -> None:
        self.doc = doc
        self.topic = topic
        self.fmt = fmt

    def fail(self, reason: str, message: str) -> PayloadError:
        return PayloadError(self.topic, reason, message)

    def where(self, name: str) -> str:
        pointer = self.fmt.pointer(name)
        if pointer == DEFAULT_MAPPING.get(name):
            return f"field '{name}'"
        return f"field '{name}' ({pointer})"

    def get(self, name: str, *, required: bool = False) -> Any:
        """The raw value at the field's pointer; _MISSING if absent (or null and optional)."""
        parts = self.fmt._pointers[name]
        if len(parts) == 1:  # the usual top-level field: skip the walk (hot path, every message)
            node = self.doc.get(parts[0])
            if node is not None:
                return node
            if required:
                raise self.fail("missing_field", f"{self.where(name)} is missing")
            return _MISSING
        node = self.doc
        walked = ""
        for part in parts:
            if isinstance(node, dict):
                node = node.get(part, _MISSING)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, list):
                node = _MISSING
            else:
                msg = f"{self.where(name)}: {walked or 'the payload'} must be an object, got {_show(node)}"
                raise self.fail("wrong_type", msg)
            walked += "/" + part
            if node is _MISSING:
                break
        if node is None:
            node = _MISSING
        if node is _MISSING and required:
            raise self.fail("missing_field", f"{self.where(name)} is missing")
        return node

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        raw = self.get(name, required=required)
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
            raise self.fail("wrong_type", f"{self.where(name)} must be a number, got {_show(raw)}")
        value = _storable_amount(value, self.where(name), self.topic)
        return self.fmt.scaled(name, value, self.where(name), self.topic)

    def mapped(self, name: str, raw: Any) -> Any:
        """`raw` through the field's value map, if it has one: the canonical word, or PayloadError
        "unmapped_value" showing the value and the map's keys."""
        table = self.fmt._maps.get(name)
        if table is None:
            return raw
        word = table.get(value_key(raw) or "")
        if word is None:
            keys = ", ".join(repr(k) for k in table)
            msg = f"{self.where(name)} {_show(raw)} is not in its value map (mqtt value_maps.{name}: {keys})"
            raise self.fail("unmapped_value", msg)
        return word

    def boolean(self, name: str) -> bool | None:
        raw = self.get(name)
        if raw is _MISSING:
            return None
        if name in self.fmt._maps:
            return bool(self.mapped(name, raw) == "true")
        if not isinstance(raw, bool):
            raise self.fail("wrong_type", f"{self.where(name)} must be true or false, got {_show(raw)}")
        return raw

    def text(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is _MISSING:
            return None
        if not isinstance(raw, str) or not raw.strip():
            raise self.fail("wrong_type", f"{self.where(name)} must be a non-empty string, got {_show(raw)}")
        at = unstorable_at(raw)
        if at is not None:
            what = "NUL" if raw[at] == "\x00" else f"a lone surrogate U+{ord(raw[at]):04X}"
            msg = f"{self.where(name)} holds {what} at position {at}, which no store can hold: {_show(raw)}"
            raise self.fail("bad_text", msg)
        return raw.strip()

    def relay(self, name: str) -> Relay | None:
        raw = self.get(name)
        if raw is _MISSING:
            return None
        raw = self.mapped(name, raw)
        try:
            return Relay(raw.strip().lower()) if isinstance(raw, str) else Relay(raw)
        except ValueError:
            allowed = " or ".join(f"'{r.value}'" for r in Relay)
            raise self.fail("wrong_type", f"{self.where(name)} must be {allowed}, got {_show(raw)}") from None

    def timestamp(self, name: str, mode: str, *, required: bool = False) -> datetime | None:
        raw = self.get(name, required=required)
        if raw is _MISSING:
            return None
        expected = _TS_EXPECTED[mode]
        numeric = isinstance(raw, (int, Decimal)) and not isinstance(raw, bool)
        if (
            isinstance(raw, bool)
            or not isinstance(raw, (int, Decimal, str))
            or (mode == "iso8601" and numeric)
        ):
            raise self.fail("wrong_type", f"{self.where(name)} must be {expected}, got {_show(raw)}")
        try:
            return _to_datetime(raw, mode)
        except (_OutOfRange, OverflowError):
            msg = f"{self.where(name)} {_show(raw)} is outside the years 1 to 9999"
            raise self.fail("bad_timestamp", msg) from None
        except (ValueError, ArithmeticError):
            # ArithmeticError: every decimal signal (decimal.Overflow is not an InvalidOperation).
            raise self.fail("bad_timestamp", f"{self.where(name)} is not {expected}: {_show(raw)}") from None


class _OutOfRange(ValueError):
    """A timestamp no datetime can hold."""


def _to_datetime(raw: int | Decimal | str, mode: str = "auto") -> datetime:
    """ISO 8601 (naive = UTC) or epoch seconds / milliseconds (numbers or numeric strings) → aware UTC."""
    if isinstance(raw, str):
        stripped = raw.strip()
        # "2024-05-01T10:00:00Z" is ISO 8601; "1714557600" and "-5" are numbers. Telling them apart
        # up front spares a failed Decimal() (an exception) on every ISO timestamp.
        if mode == "iso8601" or (mode == "auto" and ("-" in stripped[1:] or ":" in stripped)):
            return _iso(stripped)
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            if mode != "auto":
                raise
            return _iso(stripped)
    else:
        number = Decimal(raw)
    if not number.is_finite():
        msg = "not a finite number"
        raise ValueError(msg)
    if number.copy_abs() >= _EPOCH_LIMIT:  # copy_abs: abs() rounds to the context, and overflows
        msg = "outside the years 1 to 9999"
        raise _OutOfRange(msg)
    if mode == "epoch_ms" or (mode == "auto" and abs(number) >= _MS_THRESHOLD):
        number = number / 1000
    micros = int((number * 1_000_000).to_integral_value())
    return _EPOCH + timedelta(microseconds=micros)


def _iso(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


#: Built once: json.loads(..., parse_float=...) would build a new decoder for every message.
_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def _decode(payload: bytes, topic: str) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"payload is not UTF-8 text (bad byte at offset {exc.start})"
        raise PayloadError(topic, "malformed_json", msg) from None
    if too_deep(text):
        raise PayloadError(topic, "malformed_json", "payload nests too deeply")
    try:
        return _JSON.decode(text)
    except json.JSONDecodeError as exc:
        msg = f"payload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise PayloadError(topic, "malformed_json", msg) from None
    except (ValueError, RecursionError) as exc:
        msg = f"payload is not valid JSON: {exc}" if isinstance(exc, ValueError) else "payload nests too deeply"
        raise PayloadError(topic, "malformed_json", msg) from None
    except ArithmeticError:
        # parse_float=Decimal refuses an exponent beyond any decimal context (1e99999999999999999999).
        msg = "payload holds a number whose exponent is too large to read"
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
    format: Format = "json",
    timestamp: Timestamp = "auto",
) -> BalanceUpdate:
    """Decode one PAYG balance message, or raise PayloadError(topic, reason, message).

    `reason` is one of REASONS. A timestamp later than received_at + max_future is rejected
    ("future_ts"): a meter with a runaway clock must not shadow every later update.
    `currency` is used when the payload names none (always for a bare number). A malformed
    `mapping` raises ValueError (a configuration bug). Hot paths build a PayloadFormat once.
    """
    fmt = PayloadFormat(
        format=format, mapping=dict(mapping or {}), timestamp=timestamp, max_bytes=max_bytes, max_future=max_future
    )
    return fmt.parse(
        payload, topic, meter_id, received_at=received_at, low_credit_threshold=low_credit_threshold, currency=currency
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
