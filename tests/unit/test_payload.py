"""parse_balance: a table of payloads → BalanceUpdate or PayloadError(reason, exact message)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.errors import PayloadError
from gateway.model import Relay
from gateway.normalise.payload import DEFAULT_MAPPING, REASONS, PayloadFormat, parse_balance, resolve_mapping

TOPIC = "payg/M-1/balance"
RECEIVED = datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)
TS = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def parse(payload: bytes | str | dict[str, object], **kwargs: object):  # type: ignore[no-untyped-def]
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return parse_balance(payload, TOPIC, "M-1", received_at=RECEIVED, **kwargs)  # type: ignore[arg-type]


def test_full_default_layout() -> None:
    update = parse(
        '{"ts": "2024-05-01T10:00:00Z", "balance": 10.10, "currency": "kes", "emergency_credit": 5,'
        ' "emergency_credit_in_use": true, "debt": "12.5", "relay": "Disconnected",'
        ' "last_topup": {"amount": 100, "ts": 1714550000}}'
    )
    assert update.meter_id == "M-1"
    assert update.ts == TS
    assert update.balance == Decimal("10.10") and str(update.balance) == "10.10"
    assert update.currency == "KES"
    assert update.emergency_credit == Decimal(5)
    assert update.emergency_credit_in_use is True
    assert update.debt == Decimal("12.5")
    assert update.relay is Relay.DISCONNECTED
    assert update.last_topup_amount == Decimal(100)
    assert update.last_topup_ts == datetime(2024, 5, 1, 7, 53, 20, tzinfo=UTC)
    assert update.received_at == RECEIVED
    assert (update.low_credit, update.credit_exhausted) == (False, False)


def test_optional_fields_absent_or_null() -> None:
    update = parse({"ts": "2024-05-01T10:00:00Z", "balance": 7, "debt": None})
    assert update.currency == "XXX"
    assert (update.emergency_credit, update.debt, update.relay, update.last_topup_amount) == (None,) * 4
    assert update.emergency_credit_in_use is False
    assert parse({"ts": "2024-05-01T10:00:00Z", "balance": 7}, currency="KES").currency == "KES"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"2024-05-01T10:00:00Z"', TS),
        ('"2024-05-01T10:00:00+00:00"', TS),
        ('"2024-05-01T13:00:00+03:00"', TS),
        ('"2024-05-01T10:00:00"', TS),  # naive = UTC
        ('"2024-05-01T10:00:00.250Z"', TS + timedelta(milliseconds=250)),
        ("1714557600", TS),  # epoch seconds
        ("1714557600.5", TS + timedelta(milliseconds=500)),
        ("1714557600000", TS),  # epoch milliseconds
        ("1714557600123", TS + timedelta(milliseconds=123)),
        ('"1714557600"', TS),  # epoch in a string
    ],
)
def test_timestamp_forms(raw: str, expected: datetime) -> None:
    update = parse(f'{{"ts": {raw}, "balance": 1}}')
    assert update.ts == expected
    assert update.ts.tzinfo is UTC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("10.10", "10.10"), ('"10.10"', "10.10"), ("0.1", "0.1"), ("1e2", "1E+2"), ("-3.50", "-3.50"), ("42", "42")],
)
def test_balance_is_exact_decimal(raw: str, expected: str) -> None:
    balance = parse(f'{{"ts": 1714557600, "balance": {raw}}}').balance
    assert isinstance(balance, Decimal)
    assert str(balance) == expected


@pytest.mark.parametrize(
    ("balance", "low", "exhausted"),
    [("5.01", False, False), ("5", True, False), ("0.01", True, False), ("0", True, True), ("-2", True, True)],
)
def test_derived_flags(balance: str, low: bool, exhausted: bool) -> None:
    update = parse(f'{{"ts": 1714557600, "balance": {balance}}}')
    assert (update.low_credit, update.credit_exhausted) == (low, exhausted)


def test_threshold_is_configurable() -> None:
    update = parse('{"ts": 1714557600, "balance": 20}', low_credit_threshold=Decimal("25"))
    assert update.low_credit is True


def test_bare_number_is_a_balance_at_receipt() -> None:
    update = parse(b"12.34", currency="KES")
    assert update.balance == Decimal("12.34")
    assert update.ts == RECEIVED
    assert update.currency == "KES"
    assert parse(b" 3 ").balance == Decimal(3)


def test_mapping_with_json_pointers() -> None:
    payload = {
        "data": {"credit": "99.90", "time": 1714557600000, "flags": [{"relay": "connected"}]},
        "a/b": {"cur~": "USD"},
    }
    mapping = {"balance": "/data/credit", "ts": "/data/time", "relay": "/data/flags/0/relay", "currency": "/a~1b/cur~0"}
    update = parse(payload, mapping=mapping)
    assert (update.balance, update.ts, update.relay, update.currency) == (
        Decimal("99.90"),
        TS,
        Relay.CONNECTED,
        "USD",
    )


def test_mapping_names_the_pointer_in_errors() -> None:
    with pytest.raises(PayloadError) as info:
        parse({"data": {"time": 1714557600}}, mapping={"balance": "/data/credit", "ts": "/data/time"})
    assert info.value.reason == "missing_field"
    assert str(info.value) == "topic payg/M-1/balance: field 'balance' (/data/credit) is missing"


def test_mapping_rejects_unknown_fields_and_bad_pointers() -> None:
    with pytest.raises(ValueError, match="unknown canonical field"):
        parse({"balance": 1, "ts": 1}, mapping={"credit": "/x"})
    with pytest.raises(ValueError, match="must start with '/'"):
        parse({"balance": 1, "ts": 1}, mapping={"balance": "data/credit"})
    assert set(DEFAULT_MAPPING) >= {"ts", "balance", "currency", "relay"}


ERRORS = [
    # (payload, reason, message after "topic payg/M-1/balance: ")
    (b"x" * 20000, "oversized", "payload is 20000 bytes, more than the 16384 allowed"),
    (b'{"balance": ', "malformed_json", "payload is not valid JSON: Expecting value at line 1 column 13"),
    (b"\xff\xfe", "malformed_json", "payload is not UTF-8 text (bad byte at offset 0)"),
    (b"", "malformed_json", "payload is not valid JSON: Expecting value at line 1 column 1"),
    (b'{"ts": 1, "balance": NaN}', "malformed_json", "payload is not valid JSON: NaN is not valid JSON"),
    (b"[1, 2]", "not_an_object", "payload must be a JSON object or a bare number, got an array"),
    (b'"12.5"', "not_an_object", "payload must be a JSON object or a bare number, got a string"),
    (b"null", "not_an_object", "payload must be a JSON object or a bare number, got null"),
    (b"true", "not_an_object", "payload must be a JSON object or a bare number, got a boolean"),
    (b'{"ts": 1714557600}', "missing_field", "field 'balance' is missing"),
    (b'{"balance": null, "ts": 1714557600}', "missing_field", "field 'balance' is missing"),
    (b'{"balance": 1}', "missing_field", "field 'ts' is missing"),
    (b'{"ts": 1714557600, "balance": "abc"}', "wrong_type", "field 'balance' must be a number, got 'abc'"),
    (b'{"ts": 1714557600, "balance": true}', "wrong_type", "field 'balance' must be a number, got true"),
    (b'{"ts": 1714557600, "balance": "NaN"}', "wrong_type", "field 'balance' must be a number, got 'NaN'"),
    (b'{"ts": 1714557600, "balance": [1]}', "wrong_type", "field 'balance' must be a number, got [1]"),
    (
        b'{"ts": 1714557600, "balance": 1, "currency": 5}',
        "wrong_type",
        "field 'currency' must be a non-empty string, got 5",
    ),
    (
        b'{"ts": 1714557600, "balance": 1, "relay": "on"}',
        "wrong_type",
        "field 'relay' must be 'connected' or 'disconnected', got 'on'",
    ),
    (
        b'{"ts": 1714557600, "balance": 1, "emergency_credit_in_use": "yes"}',
        "wrong_type",
        "field 'emergency_credit_in_use' must be true or false, got 'yes'",
    ),
    (
        b'{"ts": 1714557600, "balance": 1, "last_topup": 5}',
        "wrong_type",
        "field 'last_topup_amount': /last_topup must be an object, got 5",
    ),
    (
        b'{"ts": true, "balance": 1}',
        "wrong_type",
        "field 'ts' must be an ISO 8601 string or epoch seconds/milliseconds, got true",
    ),
    (
        b'{"ts": "yesterday", "balance": 1}',
        "bad_timestamp",
        "field 'ts' is not an ISO 8601 string or epoch seconds/milliseconds: 'yesterday'",
    ),
    (
        b'{"ts": 1e300, "balance": 1}',
        "bad_timestamp",
        "field 'ts' 1E+300 is outside the years 1 to 9999",
    ),
    (
        b'{"ts": 1714557600, "balance": 1, "last_topup": {"amount": 5, "ts": "soon"}}',
        "bad_timestamp",
        "field 'last_topup_ts' is not an ISO 8601 string or epoch seconds/milliseconds: 'soon'",
    ),
    (
        b'{"ts": "2024-05-01T10:06:00Z", "balance": 1}',
        "future_ts",
        "field 'ts' 2024-05-01T10:06:00+00:00 is more than 300 s after receipt (2024-05-01T10:00:30+00:00)",
    ),
    (
        b'{"ts": 1714557600, "balance": 1, "currency": "K\\ud800S"}',
        "bad_text",
        "field 'currency' holds a lone surrogate U+D800 at position 1, which no store can hold: 'K\\ud800S'",
    ),
    (
        b'{"ts": 1714557600, "balance": 1, "currency": "KES\\u0000"}',
        "bad_text",
        "field 'currency' holds NUL at position 3, which no store can hold: 'KES\\x00'",
    ),
    (
        b'{"ts": 1714557600, "balance": 1e131072}',
        "bad_number",
        "field 'balance' 1E+131072 cannot be stored exactly (at most 131072 digits before the decimal point and "
        "16383 after)",
    ),
]


@pytest.mark.parametrize(("payload", "reason", "message"), ERRORS)
def test_errors(payload: bytes, reason: str, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse(payload)
    assert info.value.reason == reason
    assert info.value.topic == TOPIC
    assert str(info.value) == f"topic {TOPIC}: {message}"


def test_every_reason_is_covered() -> None:
    # A value map's refusal needs a layout with a map: tests/unit/test_payload_vocabulary.py covers it.
    # Beyond [plausibility] max_ahead, which only the normaliser passes: below.
    assert {reason for _, reason, _ in ERRORS} | {"unmapped_value", "implausible_ts"} == REASONS


def test_future_ts_within_allowance_is_accepted() -> None:
    update = parse({"ts": "2024-05-01T10:04:00Z", "balance": 1})
    assert update.ts == datetime(2024, 5, 1, 10, 4, tzinfo=UTC)
    with pytest.raises(PayloadError) as info:
        parse({"ts": "2024-05-01T10:04:00Z", "balance": 1}, max_future=timedelta(minutes=1))
    assert info.value.reason == "future_ts"


def test_a_ts_beyond_max_ahead_is_implausible_before_it_is_future() -> None:
    # One rule (plausibility.ahead) with both limits: [plausibility] max_ahead first, the format's max_future after.
    fmt = PayloadFormat(max_future=timedelta(hours=2))
    doc = b'{"ts": "2024-05-01T11:00:30Z", "balance": 1}'
    assert fmt.parse(doc, TOPIC, "M-1", received_at=RECEIVED).ts == datetime(2024, 5, 1, 11, 0, 30, tzinfo=UTC)
    with pytest.raises(PayloadError) as info:
        fmt.parse(doc, TOPIC, "M-1", received_at=RECEIVED, max_ahead=timedelta(minutes=30))
    assert (info.value.reason, str(info.value)) == ("implausible_ts", (
        f"topic {TOPIC}: field 'ts' 2024-05-01T11:00:30+00:00 is more than 1800 s after receipt "
        "(2024-05-01T10:00:30+00:00) ([plausibility] max_ahead)"))
    with pytest.raises(PayloadError) as info:
        PayloadFormat().parse(doc, TOPIC, "M-1", received_at=RECEIVED, max_ahead=timedelta(days=1))
    assert info.value.reason == "future_ts"


def test_max_bytes_is_configurable() -> None:
    with pytest.raises(PayloadError) as info:
        parse({"ts": 1714557600, "balance": 1}, max_bytes=10)
    assert info.value.reason == "oversized"


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    with pytest.raises(PayloadError) as info:
        parse(b"[" * 15000 + b"]" * 15000, max_bytes=40000)
    assert info.value.reason in ("malformed_json", "not_an_object")


# -- formats and timestamp modes ------------------------------------------------------------------


def test_number_format_takes_only_a_bare_number() -> None:
    update = parse(b"12.50", format="number", currency="KES")
    assert (update.balance, update.ts, update.currency) == (Decimal("12.50"), RECEIVED, "KES")
    with pytest.raises(PayloadError) as info:
        parse({"ts": 1714557600, "balance": 1}, format="number")
    assert info.value.reason == "wrong_type"
    assert str(info.value) == f"topic {TOPIC}: payload must be a bare number (format 'number'), got an object"
    with pytest.raises(PayloadError) as info:
        parse(b"twelve", format="number")
    assert info.value.reason == "malformed_json"


@pytest.mark.parametrize(
    ("mode", "raw", "expected"),
    [
        ("iso8601", '"2024-05-01T10:00:00Z"', TS),
        ("epoch_s", "1714557600", TS),
        ("epoch_s", '"1714557600"', TS),
        ("epoch_s", "1714557600000", None),  # seconds asked for: this is the year 56300, far in the future
        ("epoch_ms", "1714557600000", TS),
        ("epoch_ms", "1714557600", datetime(1970, 1, 20, 20, 15, 57, 600000, tzinfo=UTC)),  # taken as ms
    ],
)
def test_timestamp_modes(mode: str, raw: str, expected: datetime | None) -> None:
    payload = f'{{"ts": {raw}, "balance": 1}}'
    if expected is None:
        with pytest.raises(PayloadError) as info:
            parse(payload, timestamp=mode)
        assert info.value.reason in ("future_ts", "bad_timestamp")
    else:
        assert parse(payload, timestamp=mode).ts == expected


@pytest.mark.parametrize(
    ("mode", "raw", "reason", "message"),
    [
        ("iso8601", "1714557600", "wrong_type", "field 'ts' must be an ISO 8601 string, got 1714557600"),
        ("epoch_s", '"2024-05-01T10:00:00Z"', "bad_timestamp",
         "field 'ts' is not epoch seconds: '2024-05-01T10:00:00Z'"),
        ("epoch_ms", "true", "wrong_type", "field 'ts' must be epoch milliseconds, got true"),
    ],
)
def test_timestamp_mode_errors(mode: str, raw: str, reason: str, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse(f'{{"ts": {raw}, "balance": 1}}', timestamp=mode)
    assert (info.value.reason, str(info.value)) == (reason, f"topic {TOPIC}: {message}")


def test_received_mode_ignores_the_meters_clock() -> None:
    update = parse({"ts": "1999-01-01T00:00:00Z", "balance": 3, "last_topup": {"amount": 5, "ts": 1714557600}},
                   timestamp="received")
    assert update.ts == RECEIVED
    assert update.last_topup_ts == TS  # the top-up's own time is still read
    assert parse({"balance": 3}, timestamp="received").ts == RECEIVED  # no ts needed


def test_payload_format_is_checked_once() -> None:
    fmt = PayloadFormat(mapping={"balance": "/d/credit"}, timestamp="epoch_ms")
    update = fmt.parse(b'{"d": {"credit": "9.99"}, "ts": 1714557600000}', TOPIC, "M-1", received_at=RECEIVED)
    assert (update.balance, update.ts) == (Decimal("9.99"), TS)
    with pytest.raises(ValueError, match="format must be one of json, number"):
        PayloadFormat(format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timestamp must be one of"):
        PayloadFormat(timestamp="local")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown canonical field"):
        PayloadFormat(mapping={"credit": "/c"})
    assert resolve_mapping({"balance": "/x"})["balance"] == "/x"
    assert resolve_mapping(None) == dict(DEFAULT_MAPPING)
