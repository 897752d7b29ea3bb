"""Garbage PAYG payloads (issue 19): the 25 kinds a new user's publisher sent beside good messages,
and more, each with the dead-letter reason normalise must give it and a part of what the detail
says. Shared by the unit tests, the both-stores test and the property tests.

`{now}` is replaced by the epoch seconds of the test's clock, so only the field under test is
wrong (`{hour}`: an hour later, past [mqtt] max_future and within [plausibility] max_ahead); a byte that is not UTF-8 is written as its surrogate escape ("\\udcff" is 0xFF).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Garbage:
    name: str
    template: str
    reason: str
    says: str
    #: Sent on a topic of no configured meter.
    unknown_meter: bool = False

    def payload(self, now: int) -> bytes:
        return self.template.replace("{now}", str(now)).replace("{hour}", str(now + 3600)).encode(
            "utf-8", "surrogateescape")


MEGABYTE = '{"ts": {now}, "balance": 1, "pad": "' + "x" * (1 << 20) + '"}'

#: The issue's 25 kinds, in its order.
ISSUE = [
    Garbage("truncated JSON", '{"ts": {now}, "balance": 12.5', "malformed_json", "not valid JSON"),
    Garbage("non-UTF-8", '{"ts": {now}, "balance": "\udcff12"}', "malformed_json", "not UTF-8"),
    Garbage("deeply nested", '{"ts": {now}, "balance": ' + "[" * 3000 + "]" * 3000 + "}", "malformed_json",
            "nests too deeply"),
    Garbage("NaN", '{"ts": {now}, "balance": NaN}', "malformed_json", "NaN is not valid JSON"),
    Garbage('"NaN"', '{"ts": {now}, "balance": "NaN"}', "wrong_type", "field 'balance' must be a number"),
    Garbage("Infinity", '{"ts": {now}, "balance": Infinity}', "malformed_json", "Infinity is not valid JSON"),
    Garbage("1e308", '{"ts": {now}, "balance": 1e308}', "implausible_amount",
            "field 'balance' 1E+308 KES is beyond ±1,000,000,000 KES"),
    Garbage("negative epoch", '{"ts": -86400, "balance": 1}', "implausible_ts",
            "field 'ts' 1969-12-31T00:00:00+00:00 is before 2010-01-01T00:00:00+00:00"),
    Garbage("huge negative epoch", '{"ts": -99999999999999, "balance": 1}', "bad_timestamp",
            "outside the years 1 to 9999"),
    Garbage("far-future epoch", '{"ts": 4102444800, "balance": 1}', "implausible_ts",
            "field 'ts' 2100-01-01T00:00:00+00:00 is more than 86400 s after receipt"),
    Garbage("far-future ISO", '{"ts": "2999-01-01T00:00:00Z", "balance": 1}', "implausible_ts",
            "([plausibility] max_ahead)"),
    Garbage("unknown meter", '{"ts": {now}, "balance": 1}', "unknown_meter", "no PAYG meter configured",
            unknown_meter=True),
    Garbage("balance of the wrong type", '{"ts": {now}, "balance": {"value": 1}}', "wrong_type",
            "field 'balance' must be a number"),
    Garbage("ts of the wrong type", '{"ts": [2024, 5, 1], "balance": 1}', "wrong_type", "field 'ts' must be"),
    Garbage("relay of the wrong type", '{"ts": {now}, "balance": 1, "relay": 1}', "wrong_type",
            "field 'relay' must be"),
    Garbage("empty", "", "malformed_json", "not valid JSON"),
    Garbage("array", '[{"ts": {now}, "balance": 1}]', "not_an_object", "got an array"),
    Garbage("string", '"12.5"', "not_an_object", "got a string"),
    Garbage("null", "null", "not_an_object", "got null"),
    Garbage("missing fields", '{"ts": {now}}', "missing_field", "field 'balance' is missing"),
    Garbage("bad ISO string", '{"ts": "2024-13-45T99:00:00Z", "balance": 1}', "bad_timestamp",
            "field 'ts' is not an ISO 8601 string"),
    # A plausible bare number is a balance measured at receipt (the documented "bare number"
    # layout, SPEC §3); these are not.
    Garbage("bare number 1e308", "1e308", "implausible_amount", "field 'balance' 1E+308 KES is beyond"),
    Garbage("currency of the wrong type", '{"ts": {now}, "balance": 1, "currency": 978}', "wrong_type",
            "field 'currency' must be a non-empty string"),
    Garbage("currency with NUL", '{"ts": {now}, "balance": 1, "currency": "KE\\u0000S"}', "bad_text",
            "field 'currency' holds NUL at position 2"),
    Garbage("1 MB payload", MEGABYTE, "oversized", "more than the 16384 allowed"),
]

#: Beyond the issue: the other ways a field can hold what no meter means.
MORE = [
    Garbage("bare number with 12 decimals", "3.141592653589", "implausible_decimals",
            "field 'balance' 3.141592653589 has 12 decimal places; KES allows at most 4"),
    Garbage("balance -1e12", '{"ts": {now}, "balance": -1e12}', "implausible_amount", "field 'balance' -1E+12 KES"),
    Garbage("balance as a 50-digit string", '{"ts": {now}, "balance": "' + "9" * 50 + '"}', "implausible_amount",
            "field 'balance' " + "9" * 37 + "... KES is beyond"),
    Garbage("balance 1e-9", '{"ts": {now}, "balance": 1e-9}', "implausible_decimals", "has 9 decimal places"),
    Garbage("debt 1e308", '{"ts": {now}, "balance": 1, "debt": 1e308}', "implausible_amount", "field 'debt'"),
    Garbage("emergency credit 1e15", '{"ts": {now}, "balance": 1, "emergency_credit": 1e15}', "implausible_amount",
            "field 'emergency_credit'"),
    Garbage("top-up amount 1e308", '{"ts": {now}, "balance": 1, "last_topup": {"amount": 1e308}}',
            "implausible_amount", "field 'last_topup_amount'"),
    Garbage("top-up of 5 decimals in JPY", '{"ts": {now}, "balance": 1, "currency": "JPY", '
            '"last_topup": {"amount": 0.00001}}', "implausible_decimals", "JPY allows at most 2"),
    Garbage("currency of four letters", '{"ts": {now}, "balance": 1, "currency": "KESX"}', "bad_currency",
            "is not three capital letters (ISO 4217)"),
    Garbage("currency of digits", '{"ts": {now}, "balance": 1, "currency": "123"}', "bad_currency",
            "is not three capital letters"),
    Garbage("currency of a symbol", '{"ts": {now}, "balance": 1, "currency": "€"}', "bad_currency",
            "is not three capital letters"),
    Garbage("currency not in ISO 4217", '{"ts": {now}, "balance": 1, "currency": "ZZZ"}', "bad_currency",
            "is not a code of ISO 4217"),
    Garbage("currency of 10,000 letters", '{"ts": {now}, "balance": 1, "currency": "' + "K" * 10_000 + '"}',
            "bad_currency", "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK..."),
    Garbage("currency lone surrogate", '{"ts": {now}, "balance": 1, "currency": "\\udc00"}', "bad_text",
            "lone surrogate"),
    Garbage("ts of a reset clock (2000)", '{"ts": "2000-01-01T00:00:00Z", "balance": 1}', "implausible_ts",
            "before 2010-01-01T00:00:00+00:00 ([plausibility] ts_floor)"),
    Garbage("ts year 1", '{"ts": "0001-01-01T00:00:00Z", "balance": 1}', "implausible_ts", "before 2010"),
    Garbage("epoch milliseconds of 1970", '{"ts": 100000000000, "balance": 1}', "implausible_ts", "1973-03-03"),
    Garbage("top-up ts in the far future", '{"ts": {now}, "balance": 1, "last_topup": {"amount": 5, '
            '"ts": "2999-01-01T00:00:00Z"}}', "implausible_ts", "field 'last_topup_ts' 2999-01-01"),
    Garbage("ts an hour ahead", '{"ts": {hour}, "balance": 1}', "future_ts", "is more than 300 s after receipt"),
    Garbage("top-up ts an hour ahead", '{"ts": {now}, "balance": 1, "last_topup": {"amount": 5, "ts": {hour}}}',
            "future_ts", "field 'last_topup_ts'"),
    Garbage("top-up ts before the floor", '{"ts": {now}, "balance": 1, "last_topup": {"amount": 5, "ts": 0}}',
            "implausible_ts", "field 'last_topup_ts' 1970-01-01"),
    Garbage("ts 1e1000000", '{"ts": 1e1000000, "balance": 1}', "bad_timestamp", "outside the years 1 to 9999"),
    Garbage("balance 1e1000000", '{"ts": {now}, "balance": 1e1000000}', "bad_number", "cannot be stored exactly"),
    Garbage("exponent beyond any decimal", '{"ts": {now}, "balance": 1e99999999999999999999}', "malformed_json",
            "exponent is too large"),
    Garbage("boolean", "true", "not_an_object", "got a boolean"),
    Garbage("emergency_credit_in_use of the wrong type", '{"ts": {now}, "balance": 1, '
            '"emergency_credit_in_use": "yes"}', "wrong_type", "must be true or false"),
]

GARBAGE = ISSUE + MORE
