"""SimFleet: N simulated meters behind one pymodbus server (unit ids 1..N), like an RS-485 bus
behind a TCP gateway (Modbus TCP or RTU over TCP), or on a serial line of this machine.

Faults are served through pymodbus' SimDevice `action` hook, called on every request before
the answer is built: it copies the meter's current words into the device's registers, or
answers an exception code, or raises NoSuchIdException, which a server started with
`ignore_missing_devices=True` answers with silence (the client times out).
We use SimDevice directly because ModbusDeviceContext / ModbusServerContext are, in pymodbus
3.16, deprecated wrappers that the server converts to SimDevices anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Self

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.model.profiles import DeviceProfile
from simulators.modbus.datasheet import Datasheet, datasheet_for
from simulators.modbus.meter import Fault, SimMeter

log = logging.getLogger(__name__)

_LEGACY = {"socket": "tcp", "rtu": "rtu_tcp"}
_TRANSPORTS = ("tcp", "rtu_tcp", "serial")


class SimFleet:
    """Meters `meter_ids` (default M-0001..) of the model `profile` names, on units 1..N of one server.

    The meters serve their model's own register table (`datasheet_for(profile)`, transcribed from
    the manufacturer's document), not the profile's registers: a poller reading them with the
    profile finds out whether the profile is right.

    `transport` "tcp" (Modbus TCP) or "rtu_tcp" (RTU frames over TCP, a transparent serial
    gateway) listen on `host:port`: the first `start()` binds `port` (0: a free one, see
    `.port`); later starts reuse it, so a test can stop the "device" and bring it back.
    "serial" serves RTU on the serial device `serial_port` (e.g. one end of a pty pair).
    `speedup` runs simulated time faster than the wall clock. Every `update_interval`
    seconds (None: never) the meters are advanced.
    """

    def __init__(
        self,
        profile: DeviceProfile,
        n_meters: int,
        *,
        seed: int = 1,
        meter_ids: list[str] | None = None,
        speedup: float = 1.0,
        update_interval: float | None = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        framer: str | None = None,
        start: datetime | None = None,
        transport: str = "tcp",
        serial_port: str | None = None,
        baudrate: int = 9600,
        silent_absent: bool = False,
    ) -> None:
        ids = meter_ids or [f"M-{i:04d}" for i in range(1, n_meters + 1)]
        if len(ids) != n_meters or not 1 <= n_meters <= 247 or len(set(ids)) != n_meters:
            msg = f"simulator: need 1..247 distinct meter ids, got {n_meters} meters and ids {ids[:5]}..."
            raise ValueError(msg)
        transport = _LEGACY[framer] if framer is not None else transport
        if transport not in _TRANSPORTS or (transport == "serial") != (serial_port is not None):
            msg = f"simulator: transport {transport!r} unknown, or serial_port given without 'serial' (or missing)"
            raise ValueError(msg)
        self.profile = profile
        self.datasheet = datasheet_for(profile)
        if not self.datasheet.transcribed:
            log.warning("simulator: no register table of its own for profile %s; serving the profile's layout, "
                        "which checks nothing about it", profile.name)
        self.host = host
        self.transport = transport
        self.serial_port = serial_port
        self.baudrate = baudrate
        #: Unit ids with no meter stay silent (a transparent RTU-over-TCP gateway, a serial line)
        #: instead of answering "gateway target failed to respond" as a Modbus TCP gateway does.
        self.silent_absent = silent_absent or transport == "serial"
        self.speedup = speedup
        self.update_interval = update_interval
        self._port = port
        self._sim_start = (start or datetime.now(UTC)).timestamp()
        self._mono_start = time.monotonic()
        self.meters: dict[int, SimMeter] = {
            unit: SimMeter(meter_id, seed=seed, start=datetime.fromtimestamp(self._sim_start, UTC))
            for unit, meter_id in enumerate(ids, 1)
        }
        self._spans = _spans(self.datasheet)
        #: Each unit's model's table and address spans (one model for all, unless `mixed`).
        self._sheets: dict[int, Datasheet] = dict.fromkeys(self.meters, self.datasheet)
        self._unit_spans: dict[int, dict[int, tuple[int, int]]] = dict.fromkeys(self.meters, self._spans)
        self._images: dict[int, tuple[int, dict[int, list[int]]]] = {}  # unit -> (revision, fc -> words)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._updater: asyncio.Task[None] | None = None
        self._delayed: set[asyncio.Task[Any]] = set()  # server tasks sleeping in a "slow" answer
        self.requests = 0  # requests answered or refused, for tests and the demo
        #: The same by unit: a poller's polls of a unit are these over the blocks of its plan.
        self.requests_by_unit: Counter[int] = Counter()
        # Bus etiquette some real meters insist on, set at run time by tests: a request that comes less than
        # `min_request_gap` s after the previous answer, or that spans more than `max_registers`, is refused
        # (device busy / illegal data value) and counted.
        self.min_request_gap = 0.0
        self.max_registers = 125
        self.refused_too_soon = 0
        self.refused_too_long = 0
        self._answered_at = float("-inf")

    @classmethod
    def mixed(cls, units: Mapping[int, DeviceProfile], *, seed: int = 1, **kw: Any) -> SimFleet:
        """Meters of several models on one server, on the unit ids given (M-<unit>); every other
        unit id is absent, as on a real bus with a few meters of different makes."""
        if not units or not all(1 <= u <= 247 for u in units):
            msg = f"simulator: need unit ids in 1..247, got {sorted(units)[:5]}..."
            raise ValueError(msg)
        fleet = cls(next(iter(units.values())), len(units), seed=seed,
                    meter_ids=[f"M-{u:04d}" for u in units], **kw)
        start = datetime.fromtimestamp(fleet._sim_start, UTC)
        fleet.meters = {u: SimMeter(f"M-{u:04d}", seed=seed, start=start) for u in units}
        fleet._sheets = {u: datasheet_for(p) for u, p in units.items()}
        fleet._unit_spans = {u: _spans(sheet) for u, sheet in fleet._sheets.items()}
        return fleet

    @property
    def port(self) -> int:
        """The TCP port the fleet listens on (known after the first start)."""
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def unit_of(self, meter_id: str) -> int:
        for unit, meter in self.meters.items():
            if meter.meter_id == meter_id:
                return unit
        raise KeyError(meter_id)

    def meter(self, meter_id: str) -> SimMeter:
        return self.meters[self.unit_of(meter_id)]

    def set_fault(self, meter_id: str, fault: Fault | None, **params: float) -> None:
        """Fault one meter at run time, e.g. `set_fault("M-0002", "slow", delay=0.5)`.

        `params` set the meter's fault parameters (delay, exception_code, regression_kwh,
        garbage_word, rollover_margin_kwh, spike_kwh, spike_factor). A fault this fleet's
        model cannot show (tamper without a tamper bit, rollover without a counter that wraps)
        is refused.
        """
        meter = self.meter(meter_id)
        sheet = self._sheets[self.unit_of(meter_id)]
        if fault == "tamper" and not any(s.condition == "tamper" for s in sheet.status):
            msg = f"simulator: profile {self.profile.name} has no tamper status bit (its register table has none)"
            raise ValueError(msg)
        if fault == "rollover" and not any(r.wraps_at and r.quantity.startswith("energy_") for r in sheet.registers):
            msg = f"simulator: profile {self.profile.name} has no cumulative register with a modulus"
            raise ValueError(msg)
        for name, value in params.items():
            if not hasattr(meter, name) or name.startswith("_") or name in ("fault", "meter_id", "revision"):
                msg = f"simulator: meter {meter_id} has no fault parameter {name!r}"
                raise ValueError(msg)
            setattr(meter, name, value)
        meter.fault = fault

    def sim_now(self) -> datetime:
        """Simulated time: the start plus wall-clock time elapsed since, times `speedup`."""
        elapsed = (time.monotonic() - self._mono_start) * self.speedup
        return datetime.fromtimestamp(self._sim_start, UTC) + timedelta(seconds=elapsed)

    def tick(self, now: datetime | None = None) -> None:
        """Advance every meter to simulated time `now` (default `sim_now()`)."""
        now = now or self.sim_now()
        for meter in self.meters.values():
            meter.tick(now)

    def _image(self, unit: int) -> dict[int, list[int]]:
        """The meter's registers per function code, re-encoded only when its state changed."""
        meter = self.meters[unit]
        cached = self._images.get(unit)
        if cached is not None and cached[0] == meter.revision:
            return cached[1]
        spans = self._unit_spans[unit]
        images = {fc: [0] * (hi - lo) for fc, (lo, hi) in spans.items()}
        for (fc, address), words in meter.encode(self._sheets[unit]).items():
            lo = spans[fc][0]
            images[fc][address - lo : address - lo + len(words)] = words
        self._images[unit] = (meter.revision, images)
        return images

    def words(self, unit: int, function_code: int, address: int, count: int) -> list[int]:
        """What the server answers now for these registers (answering faults aside)."""
        lo = self._unit_spans[unit][function_code][0]
        return self._image(unit)[function_code][address - lo : address - lo + count]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again) on `host:port`; the first start with port 0 picks a free port."""
        if self._server is not None:
            return
        server: ModbusTcpServer | ModbusSerialServer
        if self.transport == "serial":
            assert self.serial_port is not None
            server = ModbusSerialServer(
                self._devices(), framer=FramerType.RTU, port=self.serial_port, baudrate=self.baudrate,
                ignore_missing_devices=True,
            )
            await server.serve_forever(background=True)
        else:
            framer = FramerType.SOCKET if self.transport == "tcp" else FramerType.RTU
            server = ModbusTcpServer(
                self._devices(), framer=framer, address=(self.host, self._port), ignore_missing_devices=True,
            )
            await server.serve_forever(background=True)
            # pymodbus keeps the asyncio.Server as its transport; it knows the port the OS chose.
            self._port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._server = server
        if self.update_interval:
            # One owned task, cancelled and awaited in stop(): the fleet is its only owner.
            self._updater = asyncio.create_task(self._update_forever(self.update_interval), name="simfleet updater")
        where = self.serial_port if self.transport == "serial" else f"{self.host}:{self._port}"
        log.info("simulated fleet of %d meters on %s (%s)", len(self.meters), where, self.transport)

    async def stop(self) -> None:
        """Stop answering and close every client connection; `start()` brings the fleet back."""
        updater, self._updater = self._updater, None
        if updater is not None:
            updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await updater
        for task in list(self._delayed):  # a stopped device answers nothing, late answers included
            task.cancel()
        server, self._server = self._server, None
        if server is not None:
            listener = server.transport
            await server.shutdown()  # type: ignore[no-untyped-call]
            if listener is not None and hasattr(listener, "wait_closed"):  # a TCP listener
                await listener.wait_closed()
            await asyncio.sleep(0)  # let the closed transports run their connection_lost

    async def _update_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.tick()

    def _devices(self) -> list[SimDevice]:
        def registers(fc: int, spans: dict[int, tuple[int, int]]) -> list[SimData]:
            if fc not in spans:
                return [SimData(0)]  # one invalid register: any read answers exception 2
            lo, hi = spans[fc]
            return [SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)]

        def bits() -> list[SimData]:
            return [SimData(0, values=[False], datatype=DataType.BITS)]

        devices = [
            SimDevice(unit, simdata=(bits(), bits(), registers(3, self._unit_spans[unit]),
                                     registers(4, self._unit_spans[unit])), action=partial(self._answer, unit))
            for unit in self.meters
        ]
        # Unit 0 stands for every unit not in the fleet: answer like a TCP gateway whose
        # serial device is absent (exception 0x0B), not with pymodbus' "device failure";
        # on a serial line an absent unit is simply silent.
        absent = self._silent if self.silent_absent else self._absent
        # It spans every address, so that an absent unit answers the same whatever is asked.
        everything = {3: (0, 0x10000), 4: (0, 0x10000)}
        devices.append(SimDevice(0, simdata=(bits(), bits(), registers(3, everything), registers(4, everything)),
                                 action=absent))
        return devices

    async def _answer(
        self, unit: int, function_code: int, start_address: int, address: int, count: int,
        registers: list[int], set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests += 1
        self.requests_by_unit[unit] += 1
        meter = self.meters[unit]
        if time.monotonic() - self._answered_at < self.min_request_gap:
            self.refused_too_soon += 1
            return ExcCodes.DEVICE_BUSY
        if count > self.max_registers:
            self.refused_too_long += 1
            return ExcCodes.ILLEGAL_VALUE
        try:
            return await self._serve(unit, meter, function_code, start_address, address, count, registers, set_values)
        finally:
            self._answered_at = time.monotonic()

    async def _serve(
        self, unit: int, meter: SimMeter, function_code: int, start_address: int, address: int, count: int,
        registers: list[int], set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        match meter.fault:
            case "timeout":
                raise NoSuchIdException(f"unit {unit} ({meter.meter_id}) is faulted silent")
            case "exception":
                return ExcCodes(meter.exception_code)
            case "slow":
                task = asyncio.current_task()  # pymodbus' task handling this request
                if task is None:  # not run by a loop task: nothing to cancel later
                    await asyncio.sleep(meter.delay)
                else:
                    self._delayed.add(task)
                    try:
                        await asyncio.sleep(meter.delay)
                    finally:
                        self._delayed.discard(task)
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # simulated meters are read-only
        image = self._image(unit).get(function_code)
        if image is not None:
            # The image and pymodbus' register block both start at the span's low address.
            off = address - start_address
            registers[off : off + count] = image[off : off + count]
        return None

    async def _silent(
        self, function_code: int, start_address: int, address: int, count: int,
        registers: list[int], set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        raise NoSuchIdException("no such unit on this line")

    async def _absent(
        self, function_code: int, start_address: int, address: int, count: int,
        registers: list[int], set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        return ExcCodes.GATEWAY_NO_RESPONSE


def _spans(sheet: Datasheet) -> dict[int, tuple[int, int]]:
    """Address span per function code; a device's registers cover it, holes read as 0."""
    spans: dict[int, tuple[int, int]] = {}
    located = [(r.function_code, r.address, r.words) for r in sheet.registers]
    located += [(s.function_code, s.address, 1) for s in sheet.status]
    located += [(c.function_code, c.address, 1) for c in sheet.constants]
    for fc, address, words in located:
        lo, hi = spans.get(fc, (address, address + words))
        spans[fc] = (min(lo, address), max(hi, address + words))
    return spans
