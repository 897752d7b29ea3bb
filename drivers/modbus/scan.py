"""Find the meters on one Modbus endpoint and tell their profiles (`meter-gateway scan`).

Each unit id of the range is probed in turn with read requests only (FC 03 / FC 04: a scan never
writes to a device). A unit that times out, or for which a TCP gateway answers "gateway path
unavailable" / "target device failed to respond" (exceptions 10, 11), is not there. A unit that
answers anything else, an exception included, is there. A profile that names a model-code register
(`[[identify]]`) fits when that register reads one of its values: that is proof, and it wins.
Otherwise each profile is tried the way volkszaehler/mbmd's scan does: a profile fits when the
values at its voltage and frequency registers are plausible (80-500 V, 45-65 Hz). The fit with the
most checks passed less checks failed wins (an L2 reading nothing counts against a three-phase
profile); profiles that score as well are named as alternatives (they read the same registers). A profile
with neither register (the first SDM72D-M) cannot be told by plausibility and is not tried.

The whole scan is bounded by `ScanRequest.budget`: when it is spent, the scan stops and says
which units it did not reach. An endpoint that refuses the connection ends the scan at once.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Callable, Mapping
from typing import Literal, cast

from drivers.base import ScanHit, ScanReport, ScanRequest
from drivers.modbus.connection import ModbusConnection, ModbusEndpoint, SerialLine
from gateway.errors import ConnectionFailed, DecodeError, MeterTimeout, ModbusExceptionResponse
from gateway.model.profiles import ByteOrder, DataType, DeviceProfile, Function, IdentifySpec, RegisterSpec
from gateway.model.readings import Channel
from gateway.model.units import conversion_factor

#: What a meter's registers must read, in the channel's canonical unit, for a profile to fit it.
PLAUSIBLE: Mapping[Channel, tuple[float, float]] = {
    Channel.VOLTAGE_L1: (80.0, 500.0),
    Channel.VOLTAGE_L2: (80.0, 500.0),
    Channel.VOLTAGE_L3: (80.0, 500.0),
    Channel.FREQUENCY: (45.0, 65.0),
}
#: A profile is tried only if it has at least one of these: the rest only add to its score.
_DECISIVE = (Channel.VOLTAGE_L1, Channel.FREQUENCY)
#: Exception codes a TCP-to-RS-485 gateway answers for a unit that is not on its line.
_ABSENT_CODES = frozenset({10, 11})
_FORMATS = {
    DataType.INT16: ">h", DataType.UINT16: ">H", DataType.INT32: ">i", DataType.UINT32: ">I",
    DataType.INT64: ">q", DataType.UINT64: ">Q", DataType.FLOAT32: ">f", DataType.FLOAT64: ">d",
}

Progress = Callable[[int, int], None]
_Key = tuple[Function, int, int]


class _Absent(Exception):
    """The unit did not answer: nobody is there."""


def value_of(spec: RegisterSpec, words: tuple[int, ...]) -> float | None:
    """The register's value in the channel's canonical unit; None for "not available" or not a number.

    The scan's own small decoder (drivers/ does not reach into the pipeline's normaliser): the
    number is only judged for plausibility here, never stored.
    """
    ordered = list(words)
    if spec.order in (ByteOrder.CDAB, ByteOrder.DCBA):
        ordered.reverse()
    if spec.order in (ByteOrder.BADC, ByteOrder.DCBA):
        ordered = [((w & 0xFF) << 8) | (w >> 8) for w in ordered]
    raw = b"".join(w.to_bytes(2, "big") for w in ordered)
    if spec.not_available is not None and int.from_bytes(raw, "big") == spec.not_available:
        return None
    number = float(struct.unpack(_FORMATS[spec.type], raw)[0])
    value = (number * spec.scale + spec.offset) * conversion_factor(spec.unit, spec.channel)
    return value if math.isfinite(value) else None


def _candidates(profiles: Mapping[str, DeviceProfile]) -> list[tuple[DeviceProfile, list[RegisterSpec]]]:
    """Each profile that can be told by plausibility, with the registers that tell it."""
    out = []
    for name in sorted(profiles):
        checks = [s for s in profiles[name].registers if s.channel in PLAUSIBLE]
        if any(s.channel in _DECISIVE for s in checks):
            out.append((profiles[name], checks))
    return out


class _Unit:
    """One unit's answers, each register read once however many profiles look at it."""

    def __init__(self, conn: ModbusConnection, unit: int) -> None:
        self.conn = conn
        self.unit = unit
        self.answered = False
        self._cache: dict[_Key, tuple[int, ...] | None] = {}

    async def words(self, spec: RegisterSpec | IdentifySpec) -> tuple[int, ...] | None:
        key = (spec.function, spec.address, spec.words if isinstance(spec, RegisterSpec) else 1)
        if key not in self._cache:
            self._cache[key] = await self._read(key)
        return self._cache[key]

    async def _read(self, key: _Key) -> tuple[int, ...] | None:
        function, address, count = key
        try:
            words = await self.conn.read(self.unit, function, address, count, meter_id=f"scan unit {self.unit}")
        except MeterTimeout:
            if not self.answered:
                raise _Absent from None
            return None  # there, but silent on this address: some meters do not answer what they lack
        except ModbusExceptionResponse as exc:
            if not self.answered and exc.code in _ABSENT_CODES:
                raise _Absent from None
            self.answered = True
            return None
        except DecodeError:
            self.answered = True
            return None
        self.answered = True
        return words


async def _by_model_code(unit: _Unit, profiles: list[DeviceProfile]) -> ScanHit | None:
    """The profiles whose model-code register reads one of their values (the first; others are alternatives)."""
    named: list[tuple[str, str]] = []
    for profile in profiles:
        for spec in profile.identify:
            words = await unit.words(spec)
            if words is not None and words[0] in spec.values:
                named.append((profile.name, f"model code {words[0]:#06x} at {spec.function.value} {spec.address:#06x}"))
                break
    if not named:
        return None
    return ScanHit(unit.unit, named[0][0], named[0][1], tuple(n for n, _ in named[1:]))


async def _identify(unit: _Unit, coded: list[DeviceProfile],
                    candidates: list[tuple[DeviceProfile, list[RegisterSpec]]]) -> ScanHit:
    """The profile the model code names; else the one whose plausibility registers read right most
    often, with ties as alternatives."""
    hit = await _by_model_code(unit, coded)
    if hit is not None:
        return hit
    scored: list[tuple[int, str, str]] = []
    for profile, checks in candidates:
        passed: list[str] = []
        failed = 0
        fits = True
        for spec in checks:
            words = await unit.words(spec)
            value = value_of(spec, words) if words is not None else None
            low, high = PLAUSIBLE[spec.channel]
            if value is not None and low <= value <= high:
                passed.append(f"{spec.channel.value} {value:.6g}")
            elif spec.channel in _DECISIVE:
                fits = False
                break
            else:
                failed += 1
        if fits and passed:
            # A three-phase profile whose L2 and L3 read nothing on a single-phase meter fits it
            # worse than the single-phase profile whose every check passes.
            scored.append((len(passed) - failed, profile.name, ", ".join(passed)))
    if not scored:
        return ScanHit(unit.unit, None, "answers, but no profile's model code matches and no voltage and frequency "
                                        "registers read plausibly")
    best = max(score for score, _, _ in scored)
    top = [(name, how) for score, name, how in scored if score == best]
    name, how = top[0]
    return ScanHit(unit.unit, name, f"plausible {how}", tuple(n for n, _ in top[1:]))


def _endpoint(request: ScanRequest) -> ModbusEndpoint:
    """The scan's endpoint: no retries (a unit that does not answer once is taken as absent)."""
    transport = cast(Literal["tcp", "rtu_tcp", "serial"], request.transport)
    serial = None
    if transport == "serial":
        if not request.serial_port:
            msg = "a serial scan needs a serial port (e.g. /dev/ttyUSB0)"
            raise ValueError(msg)
        serial = SerialLine(request.serial_port, request.baudrate,
                            cast(Literal["N", "E", "O"], request.parity), cast(Literal[1, 2], request.stopbits),
                            cast(Literal[7, 8], request.bytesize))
    return ModbusEndpoint(name="scan", host=request.host, port=request.port, transport=transport, serial=serial,
                          timeout=request.timeout, retries=0)


async def scan(request: ScanRequest, profiles: Mapping[str, DeviceProfile], progress: Progress) -> ScanReport:
    """Probe `request.units` in order on one endpoint; stop when `request.budget` seconds are spent."""
    endpoint = _endpoint(request)
    candidates = _candidates(profiles)
    coded = [profiles[name] for name in sorted(profiles) if profiles[name].identify]
    hits: list[ScanHit] = []
    probed = 0
    stopped: str | None = None
    wanted = len(request.units)
    started = time.monotonic()
    # A silent unit must not close the connection the next units use (a dead unit behind a TCP
    # gateway is not a dead gateway): the scan decides, so drops never happen on timeouts.
    async with ModbusConnection(endpoint, drop_after_timeouts=1 << 30) as conn:
        try:
            async with asyncio.timeout(request.budget):
                for unit_id in request.units:
                    unit = _Unit(conn, unit_id)
                    try:
                        hits.append(await _identify(unit, coded, candidates))
                    except _Absent:
                        pass
                    probed += 1
                    progress(probed, wanted)
        except TimeoutError:
            left = request.units[probed:]
            stopped = (f"the scan's time bound of {request.budget:g} s was spent after {probed} of {wanted} unit ids; "
                       f"not probed: {_ranges(left)}")
        except ConnectionFailed as exc:
            # The connection's own "retry in ..." is for pollers: a scan does not come back.
            stopped = f"cannot reach {endpoint.address}: {exc.detail.partition('; retry in')[0]}"
    if stopped is None and not hits:
        stopped = f"no unit answered on {endpoint.address} ({probed} unit ids probed in {time.monotonic() - started:.1f} s)"
    return ScanReport(request.where, wanted, probed, tuple(hits), stopped)


def _ranges(units: tuple[int, ...]) -> str:
    """1,2,3,7,8 -> '1-3, 7-8'."""
    parts: list[str] = []
    for u in units:
        if parts and parts[-1].split("-")[-1] == str(u - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{u}"
        else:
            parts.append(str(u))
    return ", ".join(parts) or "none"


__all__ = ["PLAUSIBLE", "scan", "value_of"]
