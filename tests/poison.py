"""Poison PAYG payloads: messages that stopped the gateway (issue 22) or came close, each with the
dead-letter reason it must get instead. Shared by the unit, property and whole-process tests.

`{now}` in a payload is replaced by the epoch seconds of the test's clock, so that only the field
under test is wrong. A template is text; a byte that is not UTF-8 is written as its surrogate
escape ("\\udcff" is the byte 0xFF).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Poison:
    name: str
    template: str
    reason: str
    #: What the dead letter's detail says (a part of it).
    says: str

    def payload(self, now: int) -> bytes:
        return self.template.replace("{now}", str(now)).encode("utf-8", "surrogateescape")


POISON = [
    # decimal.Overflow out of the payload parser (the issue's own reproductions).
    Poison("ts 1e1000000", '{"ts": 1e1000000, "balance": 1}', "bad_timestamp",
           "field 'ts' 1E+1000000 is outside the years 1 to 9999"),
    Poison("ts '1E+999999'", '{"ts": "1E+999999", "balance": 1}', "bad_timestamp",
           "field 'ts' '1E+999999' is outside the years 1 to 9999"),
    Poison("last_topup.ts 1e1000000", '{"ts": {now}, "balance": 1, "last_topup": {"amount": 5, "ts": 1e1000000}}',
           "bad_timestamp", "field 'last_topup_ts' 1E+1000000 is outside the years 1 to 9999"),
    Poison("ts 9.99e999999", '{"ts": 9.99e999999, "balance": 1}', "bad_timestamp", "outside the years 1 to 9999"),
    # Took 30 s of CPU in the event loop (a million-digit integer) before it failed as bad_timestamp.
    Poison("ts 1e999990", '{"ts": 1e999990, "balance": 1}', "bad_timestamp", "outside the years 1 to 9999"),
    # decimal.Overflow out of the PAYG checker's arithmetic; PostgreSQL's numeric cannot hold them.
    Poison("balance 1e1000000", '{"ts": {now}, "balance": 1e1000000}', "bad_number",
           "field 'balance' 1E+1000000 cannot be stored exactly"),
    Poison("balance -1e1000000", '{"ts": {now}, "balance": -1e1000000}', "bad_number",
           "field 'balance' -1E+1000000 cannot be stored exactly"),
    Poison("balance '1e1000000'", '{"ts": {now}, "balance": "1e1000000"}', "bad_number",
           "field 'balance' 1E+1000000 cannot be stored exactly"),
    Poison("balance 1e-1000000", '{"ts": {now}, "balance": 1e-1000000}', "bad_number",
           "field 'balance' 1E-1000000 cannot be stored exactly"),
    Poison("emergency_credit 1e1000000", '{"ts": {now}, "balance": 1, "emergency_credit": 1e1000000}', "bad_number",
           "field 'emergency_credit' 1E+1000000 cannot be stored exactly"),
    Poison("debt 1e200000", '{"ts": {now}, "balance": 1, "debt": 1e200000}', "bad_number",
           "field 'debt' 1E+200000 cannot be stored exactly"),
    Poison("last_topup.amount 1e1000000", '{"ts": {now}, "balance": 1, "last_topup": {"amount": 1e1000000}}',
           "bad_number", "field 'last_topup_amount' 1E+1000000 cannot be stored exactly"),
    Poison("bare number 1e1000000", "1e1000000", "bad_number", "the payload 1E+1000000 cannot be stored exactly"),
    # decimal.InvalidOperation out of the JSON decoder (parse_float=Decimal).
    Poison("exponent beyond any decimal", '{"ts": {now}, "balance": 1e99999999999999999999}', "malformed_json",
           "exponent is too large"),
    # UnicodeEncodeError in the spool's encoder; PostgreSQL text cannot hold NUL.
    Poison("currency lone surrogate", '{"ts": {now}, "balance": 1, "currency": "\\ud800"}', "bad_text",
           "field 'currency' holds a lone surrogate U+D800 at position 0"),
    Poison("currency NUL", '{"ts": {now}, "balance": 1, "currency": "K\\u0000ES"}', "bad_text",
           "field 'currency' holds NUL at position 1"),
]

#: Odd inputs the gateway already set aside before issue 22; kept beside the poison as regressions.
ODD = [
    Poison("deep nesting", '{"ts": {now}, "balance": ' + "[" * 5000 + "]" * 5000 + "}", "malformed_json",
           "nests too deeply"),
    Poison("ts before the year 1", '{"ts": -62135596801, "balance": 1}', "bad_timestamp", "outside the years"),
    Poison("ts at the end of 9999 with an offset", '{"ts": "9999-12-31T23:59:59-01:00", "balance": 1}',
           "bad_timestamp", "outside the years"),
    Poison("NaN", '{"ts": {now}, "balance": NaN}', "malformed_json", "NaN is not valid JSON"),
    Poison("huge integer", '{"ts": {now}, "balance": ' + "9" * 5000 + "}", "malformed_json", "4300 digits"),
    Poison("not UTF-8", '{"ts": {now}, "balance": 1, "currency": "\udcff"}', "malformed_json", "not UTF-8"),
]
