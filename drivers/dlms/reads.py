"""What the driver reads of a meter's objects, over an associated Session:

- Data (class 1): attribute 2, as it is;
- Register (3) and Extended register (4): attribute 2 × 10^scaler of attribute 3, exactly, with the
  unit of attribute 3 (read once per object and kept: it does not change);
- Clock (8): attribute 2, the meter's time (for the clock offset);
- Profile generic (7): capture objects (attribute 3) and the buffer (attribute 2) by range
  (RangeDescriptor on the clock column), as rows with each register column scaled.

A value of the wrong type for its object raises `FrameError` with the bytes (dead-lettered by the
poller); an object the meter does not have raises `AccessError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from dlms_cosem import cosem, enumerations
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor

from drivers.dlms import axdr
from drivers.dlms.cosem import MeterTime, ScalerUnit, date_time, obis_bytes, obis_code, scaled
from drivers.dlms.errors import AccessError, FrameError
from drivers.dlms.session import Session

DATA, REGISTER, EXTENDED_REGISTER, PROFILE_GENERIC, CLOCK = 1, 3, 4, 7, 8
#: Access results that may mean "not under this class" (IEC 62056-5-3 Data-Access-Result).
_WRONG_CLASS = ("object undefined", "object class inconsistent", "object unavailable", "type unmatched")
CLOCK_CODE = "0-0:1.0.0"


@dataclass(frozen=True, slots=True)
class ObjectRead:
    """One object's value as the map reads it: (code, value, unit)."""

    code: str
    value: Decimal | str
    unit: str | None


def guess_class(code: str) -> int:
    """The interface class an OBIS code usually has (IDIS/DSMR object lists): the clock is class 8,
    maximum demand (D = 6) class 4, other electricity/gas/water quantities class 3, abstract
    objects (A = 0) class 1. A meter that differs is told per object in the meter's `classes`."""
    a, _b, c, d, _e, _f = obis_bytes(code)
    if a == 0 and c == 1 and d == 0:
        return CLOCK
    if a == 0:
        return DATA
    return EXTENDED_REGISTER if d == 6 else REGISTER


class Reader:
    """Reads objects through one session at a time; remembers each register's scaler and unit."""

    def __init__(self) -> None:
        self._scalers: dict[str, ScalerUnit] = {}
        self._classes: dict[str, int] = {}  # the class a guessed object turned out to have

    async def read_guessed(self, session: Session, interface: int, code: str) -> ObjectRead:
        """`read`, for an object whose class was guessed (guess_class): a meter that has the object
        under another class says so (object undefined / class inconsistent), and the other value
        classes are tried once; the one that answers is remembered."""
        first = self._classes.get(code, interface)
        try:
            return await self.read(session, first, code)
        except AccessError as err:
            if code in self._classes or err.result not in _WRONG_CLASS:
                raise
            for other in (REGISTER, EXTENDED_REGISTER, DATA):
                if other == first:
                    continue
                try:
                    found = await self.read(session, other, code)
                except AccessError:
                    continue
                self._classes[code] = other
                return found
            raise

    async def value(self, session: Session, interface: int, code: str) -> axdr.Value:
        raw = await session.get(interface, obis_bytes(code), 2)
        return _decode(session, raw, f"{code} value")

    async def scaler_unit(self, session: Session, interface: int, code: str) -> ScalerUnit:
        found = self._scalers.get(code)
        if found is None:
            raw = await session.get(interface, obis_bytes(code), 3)
            try:
                found = ScalerUnit.from_value(_decode(session, raw, f"{code} scaler_unit"))
            except TypeError as exc:
                raise FrameError(session.meter_id, session.where, f"{code} attribute 3: {exc}", raw) from None
            self._scalers[code] = found
        return found

    async def read(self, session: Session, interface: int, code: str) -> ObjectRead:
        """One Data, Register or Extended register object as the map reads it."""
        value = await self.value(session, interface, code)
        if interface in (REGISTER, EXTENDED_REGISTER):
            su = await self.scaler_unit(session, interface, code)
            try:
                return ObjectRead(code, scaled(value, su), su.unit)
            except TypeError as exc:
                raise FrameError(session.meter_id, session.where, f"{code}: {exc}", session.last_raw) from None
        if isinstance(value, bool) or value is None or isinstance(value, tuple):
            raise FrameError(session.meter_id, session.where, f"{code}: Data value {value!r:.60} is no number or text",
                             session.last_raw)
        if isinstance(value, bytes):
            return ObjectRead(code, value.decode("latin-1") if value.isascii() else value.hex(), None)
        return ObjectRead(code, Decimal(value) if isinstance(value, int) else value, None)

    async def clock(self, session: Session, code: str = CLOCK_CODE) -> MeterTime:
        raw = await session.get(CLOCK, obis_bytes(code), 2)
        try:
            return date_time(_decode(session, raw, "clock"))
        except ValueError as exc:
            raise FrameError(session.meter_id, session.where, f"{code} time: {exc}", raw) from None


@dataclass(frozen=True, slots=True)
class Column:
    interface: int
    code: str
    attribute: int


@dataclass(frozen=True, slots=True)
class ProfileRows:
    """A profile's rows between two times: the columns, and per row its capture time, the status
    (the value of a 0-0:96.10.x column, None without one) and each mapped column's value."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[datetime, int | None, tuple[ObjectRead, ...]], ...]


async def read_profile(reader: Reader, session: Session, code: str, start: datetime, end: datetime) -> ProfileRows:
    """The rows of profile `code` captured from `start` to `end` (a RangeDescriptor on its clock
    column): what the backfill of issue 17 item 4 reads after a gap."""
    ln = obis_bytes(code)
    raw_columns = _decode(session, await session.get(PROFILE_GENERIC, ln, 3), f"{code} capture_objects")
    columns = _columns(session, raw_columns, code)
    clock_at = next((i for i, c in enumerate(columns) if c.interface == CLOCK), None)
    if clock_at is None:
        raise FrameError(session.meter_id, session.where, f"{code}: no clock column to read by range", session.last_raw)
    clock = columns[clock_at]
    restricting = CaptureObject(cosem.CosemAttribute(enumerations.CosemInterface(CLOCK),
                                                     cosem.Obis.from_bytes(obis_bytes(clock.code)), 2))
    access = RangeDescriptor(restricting_object=restricting, from_value=start, to_value=end)
    buffer = _decode(session, await session.get(PROFILE_GENERIC, ln, 2, access), f"{code} buffer")
    scalers = [await reader.scaler_unit(session, c.interface, c.code) if c.interface in (REGISTER, EXTENDED_REGISTER)
               else None for c in columns]
    if not isinstance(buffer, tuple):
        raise FrameError(session.meter_id, session.where, f"{code} buffer is not an array", session.last_raw)
    rows = []
    for n, row in enumerate(buffer):
        if not isinstance(row, tuple) or len(row) != len(columns):
            raise FrameError(session.meter_id, session.where, f"{code} row {n} does not match its "
                             f"{len(columns)} capture objects", session.last_raw)
        try:
            at = date_time(row[clock_at]).at
            status = next((int(v) for c, v in zip(columns, row, strict=True)
                           if c.code.startswith("0-0:96.10.") and isinstance(v, int)), None)
            values = tuple(ObjectRead(c.code, scaled(v, su), su.unit) for c, v, su in zip(columns, row, scalers, strict=True)
                           if su is not None)
        except (TypeError, ValueError) as exc:
            raise FrameError(session.meter_id, session.where, f"{code} row {n}: {exc}", session.last_raw) from None
        rows.append((at, status, values))
    return ProfileRows(columns, tuple(rows))


def _columns(session: Session, raw: axdr.Value, code: str) -> tuple[Column, ...]:
    if not isinstance(raw, tuple):
        raise FrameError(session.meter_id, session.where, f"{code} capture_objects is not an array", session.last_raw)
    out = []
    for item in raw:
        if not (isinstance(item, tuple) and len(item) == 4 and isinstance(item[0], int) and isinstance(item[1], bytes)
                and len(item[1]) == 6 and isinstance(item[2], int)):
            raise FrameError(session.meter_id, session.where, f"{code}: capture object {item!r:.80} is not "
                             "{class_id, logical_name, attribute_index, data_index}", session.last_raw)
        out.append(Column(item[0], obis_code(item[1]), item[2]))
    return tuple(out)


def _decode(session: Session, raw: bytes, what: str) -> axdr.Value:
    try:
        return axdr.decode(raw)
    except axdr.DataError as exc:
        raise FrameError(session.meter_id, session.where, f"{what}: {exc}", raw) from None


def codes_to_read(codes: Sequence[str], classes: dict[str, int]) -> list[tuple[int, str]]:
    """(interface class, code) of every mapped code: the meter's `classes` or the usual class."""
    return [(classes.get(c) or guess_class(c), c) for c in codes]


__all__ = ["CLOCK_CODE", "Column", "ObjectRead", "ProfileRows", "Reader", "codes_to_read", "guess_class", "read_profile"]
