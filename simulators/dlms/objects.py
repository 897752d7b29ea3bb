"""The simulated meter's COSEM object list, written from the DLMS UA Blue Book (IEC 62056-6-2) and the OBIS
codes as published: not from the gateway's own maps, so that the driver and the simulator cannot share a mistake.

Each object answers GET of an attribute, SET and ACTION of a method as A-XDR bytes (or raises AccessError with
the Data-Access-Result / Action-Result code a meter would send).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from simulators.dlms import axdr
from simulators.dlms.axdr import Decoded
from simulators.dlms.meter import MeterState, token_check_digit
from simulators.dlms.model import STATUS_TAMPER

# Data-Access-Result / Action-Result codes (Blue Book 9.5, the same numbers for both)
READ_WRITE_DENIED = 3
OBJECT_UNDEFINED = 4
OBJECT_UNAVAILABLE = 11
TYPE_UNMATCHED = 12
SCOPE_OF_ACCESS_VIOLATED = 13
OTHER_REASON = 250

# Units (Blue Book enumeration of unit)
UNIT_W, UNIT_WH, UNIT_V, UNIT_A, UNIT_HZ, UNIT_CURRENCY = 27, 30, 35, 33, 44, 255


class AccessError(Exception):
    """The meter refuses: `code` is the Data-Access-Result (GET/SET) or Action-Result (ACTION)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


def obis(text: str) -> bytes:
    """'1-0:1.8.0.255' -> 6 octets."""
    a_b, _, rest = text.partition(":")
    a, b = a_b.split("-")
    return bytes(int(x) for x in (a, b, *rest.split(".")))


class CosemObject(Protocol):
    class_id: int
    version: int
    ln: bytes

    def get(self, attr: int, selection: Decoded | None, selector: int) -> bytes: ...

    def set(self, attr: int, value: Decoded) -> None: ...

    def action(self, method: int, param: Decoded | None) -> bytes | None: ...


class Base:
    class_id = 0
    version = 0

    def __init__(self, ln: str, meter: MeterState) -> None:
        self.ln = obis(ln)
        self.meter = meter

    def get(self, attr: int, selection: Decoded | None, selector: int) -> bytes:
        if attr == 1:
            return axdr.octet_string(self.ln)
        if selection is not None:
            raise AccessError(SCOPE_OF_ACCESS_VIOLATED, f"attribute {attr} has no selective access")
        return self.attribute(attr)

    def attribute(self, attr: int) -> bytes:
        raise AccessError(OBJECT_UNDEFINED, f"no attribute {attr}")

    def set(self, attr: int, value: Decoded) -> None:
        raise AccessError(READ_WRITE_DENIED, f"attribute {attr} is read-only")

    def action(self, method: int, param: Decoded | None) -> bytes | None:
        raise AccessError(OBJECT_UNDEFINED, f"no method {method}")


class Data(Base):
    """Class 1: one value, computed when read."""

    class_id = 1

    def __init__(self, ln: str, meter: MeterState, value: Callable[[], bytes]) -> None:
        super().__init__(ln, meter)
        self.value = value

    def attribute(self, attr: int) -> bytes:
        if attr == 2:
            return self.value()
        return super().attribute(attr)


class Register(Base):
    """Class 3: value with scaler and unit (attribute 3). The value is an exact integer; value × 10^scaler is
    what the meter shows."""

    class_id = 3

    def __init__(self, ln: str, meter: MeterState, value: Callable[[], bytes], scaler: int, unit: int) -> None:
        super().__init__(ln, meter)
        self.value, self.scaler, self.unit = value, scaler, unit

    def attribute(self, attr: int) -> bytes:
        if attr == 2:
            return self.value()
        if attr == 3:
            return axdr.scaler_unit(self.scaler, self.unit)
        return super().attribute(attr)


class Clock(Base):
    """Class 8, 0-0:1.0.0.255: the meter's clock (UTC, no DST); SET of `time` moves it (a time sync)."""

    class_id = 8

    def attribute(self, attr: int) -> bytes:
        values = {
            2: lambda: axdr.octet_string(axdr.cosem_datetime(self.meter.meter_time())),
            3: lambda: axdr.long(0), 4: lambda: axdr.unsigned(0),
            5: lambda: axdr.octet_string(b"\xff" * 12), 6: lambda: axdr.octet_string(b"\xff" * 12),
            7: lambda: axdr.integer(0), 8: lambda: axdr.boolean(False), 9: lambda: axdr.enum(1),
        }
        if attr in values:
            return values[attr]()
        return super().attribute(attr)

    def set(self, attr: int, value: Decoded) -> None:
        if attr != 2 or not isinstance(value.value, bytes) or len(value.value) != 12:
            raise AccessError(TYPE_UNMATCHED if attr == 2 else READ_WRITE_DENIED, "clock: want a date-time")
        try:
            wanted = axdr.parse_cosem_datetime(value.value)
        except axdr.AxdrError as exc:
            raise AccessError(TYPE_UNMATCHED, str(exc)) from None
        meter = self.meter
        meter.clock_offset_s = (wanted - meter.now()).total_seconds() - meter.drift_s
        # The interval in progress is flagged "clock adjusted" in the load profile.
        k, _ = meter.consumption.boundary(meter.now())
        meter.clock_adjusted_at.add(k + 1)


class DisconnectControl(Base):
    """Class 70, 0-0:96.3.10.255, control_mode 1: remote_disconnect opens the relay, remote_reconnect closes it
    again directly (no manual step); output_state also opens when the prepaid credit runs out."""

    class_id = 70

    def attribute(self, attr: int) -> bytes:
        if attr == 2:
            return axdr.boolean(self.meter.output_connected())
        if attr == 3:
            return axdr.enum(1 if self.meter.output_connected() else 0)
        if attr == 4:
            return axdr.enum(1)
        return super().attribute(attr)

    def action(self, method: int, param: Decoded | None) -> bytes | None:
        if method not in (1, 2):
            return super().action(method, param)
        self.meter.remote_connected = method == 2
        return None


class Account(Base):
    """Class 111, 0-0:19.0.0.255: mode prepayment (2), status active (2); currency in cents of 'KES'."""

    class_id = 111

    def attribute(self, attr: int) -> bytes:
        if attr == 2:
            return axdr.structure(axdr.enum(2), axdr.enum(2))
        if attr == 3:
            return axdr.unsigned(0b0000_0001)  # credit 1 (the one Credit object) in use
        if attr == 4:
            return axdr.bit_string("10000000" if self.meter.credit() > 0 else "00000001")
        if attr == 5:
            return axdr.double_long(self.meter.credit())
        if attr in (6, 7, 8):
            return axdr.double_long(0)
        if attr == 13:
            return axdr.structure(axdr.visible_string("KES"), axdr.integer(-2), axdr.enum(1))
        return super().attribute(attr)


class Credit(Base):
    """Class 112, 0-0:19.10.0.255: token credit; current_credit_amount in the account's currency units."""

    class_id = 112

    def attribute(self, attr: int) -> bytes:
        credit = self.meter.credit()
        values = {2: axdr.double_long(credit), 3: axdr.enum(0), 4: axdr.unsigned(1),
                  5: axdr.double_long(500), 6: axdr.double_long(0), 7: axdr.bit_string("00000"),
                  8: axdr.enum(2 if credit > 0 else 4), 9: axdr.double_long(0), 10: axdr.double_long(0)}
        if attr in values:
            return values[attr]
        return super().attribute(attr)


# token_status status_code (Blue Book, Token gateway)
TOKEN_EXECUTION_OK = 3
TOKEN_FORMAT_FAILURE = 4
TOKEN_VALIDATION_FAILURE = 6


class TokenGateway(Base):
    """Class 115, 0-0:19.40.0.255: `enter` (method 1) takes a token; token_status (attr 6) says what came of it.

    The answer to `enter` carries the token_status too, so a client sees the result in one round trip."""

    class_id = 115

    def attribute(self, attr: int) -> bytes:
        meter = self.meter
        if attr == 2:
            return axdr.octet_string(meter.last_token.encode())
        if attr == 3:
            when = meter.last_token_time
            return axdr.octet_string(axdr.cosem_datetime(when) if when else b"\xff" * 12)
        if attr == 4:
            return axdr.array([])
        if attr == 5:
            return axdr.enum(0)  # remote delivery
        if attr == 6:
            return self._status()
        return super().attribute(attr)

    def _status(self) -> bytes:
        return axdr.structure(axdr.enum(self.meter.token_status), axdr.bit_string(""))

    def action(self, method: int, param: Decoded | None) -> bytes | None:
        if method != 1:
            return super().action(method, param)
        if param is None or not isinstance(param.value, bytes | str):
            raise AccessError(TYPE_UNMATCHED, "enter: want the token as an octet-string")
        raw = param.value
        token = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        meter = self.meter
        meter.last_token, meter.last_token_time = token, meter.meter_time()
        if len(token) != 20 or not token.isdigit() or token_check_digit(token[:19]) != token[19]:
            meter.token_status = TOKEN_FORMAT_FAILURE
        elif token in meter.used_tokens:
            meter.token_status = TOKEN_VALIDATION_FAILURE
        else:
            meter.used_tokens.add(token)
            meter.add_credit(int(token[:8]))
            meter.token_status = TOKEN_EXECUTION_OK
        return self._status()


@dataclass(frozen=True, slots=True)
class Column:
    """One capture object of a profile: class, logical name, attribute, data index."""

    class_id: int
    ln: bytes
    attr: int
    data_index: int = 0

    def encode(self) -> bytes:
        return axdr.structure(axdr.long_unsigned(self.class_id), axdr.octet_string(self.ln),
                              axdr.integer(self.attr), axdr.long_unsigned(self.data_index))


def amr_status(meter: MeterState) -> int:
    return STATUS_TAMPER if "tamper" in meter.faults else 0

