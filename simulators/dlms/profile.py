"""Profile generic (class 7), the load profile 1-0:99.1.0.255: a 15-minute capture of clock, status byte and
the import energy register, with the history the meter holds and selective access by range (on the clock
column) and by entry index.

Entries are generated from the consumption model when read, never stored: entry k is captured at
origin + k × 15 min. Faults remove entries (gaps: power failures, with the power-down bit on the entry after)
or set status bits (tamper).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from simulators.dlms import axdr
from simulators.dlms.axdr import Decoded
from simulators.dlms.meter import MeterState
from simulators.dlms.model import DAY_INTERVALS, INTERVAL_S, STATUS_CLOCK_ADJUSTED, STATUS_POWER_DOWN, STATUS_TAMPER
from simulators.dlms.objects import (
    OTHER_REASON,
    SCOPE_OF_ACCESS_VIOLATED,
    TYPE_UNMATCHED,
    AccessError,
    Base,
    Column,
    obis,
)

CLOCK_COLUMN = Column(8, obis("0-0:1.0.0.255"), 2)
COLUMNS = (CLOCK_COLUMN, Column(1, obis("0-0:96.10.1.255"), 2), Column(3, obis("1-0:1.8.0.255"), 2))


def gap_intervals(meter: MeterState, day: int) -> range:
    """Entries missing on `day` (since the origin) under the gaps fault: a power failure 02:00-04:00 every
    third day, staggered across meters."""
    if "gaps" not in meter.faults or (day + meter.spec.number) % 3:
        return range(0)
    first = day * DAY_INTERVALS + 9  # the entries stamped 02:15 .. 04:00
    return range(first, first + 8)


class LoadProfile(Base):
    class_id = 7
    version = 1

    def __init__(self, ln: str, meter: MeterState, capacity: int) -> None:
        super().__init__(ln, meter)
        self.capacity = capacity

    # -- which entries exist -------------------------------------------------------------------
    def _last(self) -> int:
        k, _ = self.meter.consumption.boundary(self.meter.now())
        return k

    def _present(self, k: int) -> bool:
        return k not in gap_intervals(self.meter, k // DAY_INTERVALS)

    def entries(self) -> list[int]:
        last = self._last()
        first = max(1, last - self.capacity + 1)
        return [k for k in range(first, last + 1) if self._present(k)]

    def _status(self, k: int) -> int:
        meter, status = self.meter, 0
        day = k // DAY_INTERVALS
        gap = gap_intervals(meter, day)
        if gap and k == gap.stop:
            status |= STATUS_POWER_DOWN
        if "tamper" in meter.faults and k % DAY_INTERVALS == 52 and (day + meter.spec.number) % 4 == 0:
            status |= STATUS_TAMPER
        if k in meter.clock_adjusted_at:
            status |= STATUS_CLOCK_ADJUSTED
        return status

    def _row(self, k: int, columns: Sequence[int]) -> bytes:
        when = self.meter.consumption.origin + dt.timedelta(seconds=INTERVAL_S * k)
        cells = (lambda: axdr.octet_string(axdr.cosem_datetime(when)), lambda: axdr.unsigned(self._status(k)),
                 lambda: axdr.double_long_unsigned(self.meter.consumption.profile_energy(k)))
        return axdr.structure(*(cells[c]() for c in columns))

    # -- attributes ----------------------------------------------------------------------------
    def get(self, attr: int, selection: Decoded | None, selector: int) -> bytes:
        if attr != 2 or selection is None:
            return super().get(attr, None, 0)
        if selector == 1:
            ks, columns = self._by_range(selection)
        elif selector == 2:
            ks, columns = self._by_entry(selection)
        else:
            raise AccessError(SCOPE_OF_ACCESS_VIOLATED, f"access selector {selector} (want 1 range or 2 entry)")
        return axdr.array([self._row(k, columns) for k in ks])

    def attribute(self, attr: int) -> bytes:
        if attr == 2:
            return axdr.array([self._row(k, range(3)) for k in self.entries()])
        if attr == 3:
            return axdr.array([c.encode() for c in COLUMNS])
        if attr == 4:
            return axdr.double_long_unsigned(INTERVAL_S)
        if attr == 5:
            return axdr.enum(1)  # fifo
        if attr == 6:
            return axdr.structure(axdr.long_unsigned(0), axdr.octet_string(bytes(6)), axdr.integer(0),
                                  axdr.long_unsigned(0))
        if attr == 7:
            return axdr.double_long_unsigned(len(self.entries()))
        if attr == 8:
            return axdr.double_long_unsigned(self.capacity)
        return super().attribute(attr)

    # -- selective access ----------------------------------------------------------------------
    def _by_range(self, sel: Decoded) -> tuple[list[int], Sequence[int]]:
        items = _fields(sel, 4, "range_descriptor")
        restricting = _fields(items[0], 4, "restricting_object")
        column = Column(_int(restricting[0]), _octets(restricting[1]), _int(restricting[2]), _int(restricting[3]))
        if (column.class_id, column.ln, column.attr) != (8, CLOCK_COLUMN.ln, 2):
            raise AccessError(OTHER_REASON, "range: the restricting object must be the clock (0-0:1.0.0.255:2)")
        try:
            start = axdr.parse_cosem_datetime(_octets(items[1]))
            end = axdr.parse_cosem_datetime(_octets(items[2]))
        except axdr.AxdrError as exc:
            raise AccessError(TYPE_UNMATCHED, f"range: {exc}") from None
        origin = self.meter.consumption.origin
        k_from = math.ceil((start - origin).total_seconds() / INTERVAL_S)
        k_to = math.floor((end - origin).total_seconds() / INTERVAL_S)
        present = set(self.entries())
        ks = [k for k in range(max(k_from, 1), min(k_to, self._last()) + 1) if k in present]
        return ks, self._columns(items[3])

    def _by_entry(self, sel: Decoded) -> tuple[list[int], Sequence[int]]:
        items = _fields(sel, 4, "entry_descriptor")
        first, last, col_from, col_to = (_int(i) for i in items)
        entries = self.entries()
        last = len(entries) if last == 0 else min(last, len(entries))
        col_to = 3 if col_to == 0 else min(col_to, 3)
        if first < 1 or col_from < 1 or col_from > col_to:
            raise AccessError(SCOPE_OF_ACCESS_VIOLATED, f"entry_descriptor {first}..{last} cols {col_from}..{col_to}")
        return entries[first - 1:last], range(col_from - 1, col_to)

    @staticmethod
    def _columns(selected: Decoded) -> Sequence[int]:
        wanted = selected.value
        if not isinstance(wanted, list) or not wanted:
            return range(3)
        picked: list[int] = []
        for item in wanted:
            f = _fields(item, 4, "selected value")
            key = (_int(f[0]), _octets(f[1]), _int(f[2]))
            idx = [i for i, c in enumerate(COLUMNS) if (c.class_id, c.ln, c.attr) == key]
            if not idx:
                raise AccessError(OTHER_REASON, f"selected value {key} is not a capture object")
            picked.append(idx[0])
        return picked


def _fields(d: Decoded, n: int, what: str) -> list[Decoded]:
    if not isinstance(d.value, list) or len(d.value) != n:
        raise AccessError(TYPE_UNMATCHED, f"{what}: want a structure of {n}")
    return d.value


def _int(d: Decoded) -> int:
    if not isinstance(d.value, int) or isinstance(d.value, bool):
        raise AccessError(TYPE_UNMATCHED, f"want an integer, got type 0x{d.tag:02x}")
    return d.value


def _octets(d: Decoded) -> bytes:
    if not isinstance(d.value, bytes):
        raise AccessError(TYPE_UNMATCHED, f"want an octet-string, got type 0x{d.tag:02x}")
    return d.value
