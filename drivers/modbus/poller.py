"""ModbusPoller: polls the meters of one endpoint on their intervals and emits what it read.

One task per meter inside one TaskGroup; the endpoint's connection (and its lock) is the only
thing they share, and each hold of the lock is bounded by the endpoint's timeout, so a slow or
dead meter costs its own slot, not the fleet's. Each meter's health is a small state machine
(ok -> failing -> lost -> ok) that emits comm_lost / comm_restored once per transition.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from drivers.modbus.connection import ModbusConnection, ModbusEndpoint, describe_read
from drivers.modbus.plan import plan_reads
from drivers.samples import PollFailure, RawRegisters, RegisterBlock
from gateway.backoff import Backoff
from gateway.errors import DriverError, InvalidRequest, NotFound
from gateway.model import Event, EventKind, Severity
from gateway.model.profiles import DeviceProfile, Function

log = logging.getLogger(__name__)

Emit = Callable[[RawRegisters | PollFailure | Event], Awaitable[None]]

#: Send times are spread over the first part of each interval: this fraction, at most _MAX_SPREAD s.
_SPREAD = 0.1
_MAX_SPREAD = 5.0
MAX_READ = 125  # registers per FC 03/04 request (Modbus Application Protocol V1.1b3)


@dataclass(frozen=True, slots=True)
class PollTarget:
    """One meter on the endpoint: its unit id, register map and poll interval."""

    meter_id: str
    unit: int  # Modbus device id 1..247
    profile: DeviceProfile
    interval: float  # seconds
    align: bool = True  # timestamp = interval boundary the poll belongs to

    def __post_init__(self) -> None:
        if not 1 <= self.unit <= 247 or self.interval <= 0:
            msg = f"meter {self.meter_id}: need unit in 1..247 and interval > 0 (got {self.unit}, {self.interval})"
            raise ValueError(msg)


@dataclass(slots=True)
class MeterHealth:
    """What diagnostics show of one meter; updated on every poll."""

    meter_id: str
    unit: int
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    last_latency_s: float | None = None
    polls: int = 0  # attempts, failed ones included
    failures: int = 0
    skipped: int = 0  # boundaries missed because the previous poll was still running
    last_raw: tuple[RegisterBlock, ...] = ()
    comm_lost: bool = False


def _utc_now() -> datetime:
    return datetime.now(UTC)


def send_offset(meter_id: str, interval: float) -> float:
    """Deterministic per-meter delay after the boundary, so meters do not all send at once."""
    window = min(interval * _SPREAD, _MAX_SPREAD)
    return window * (zlib.crc32(meter_id.encode()) / 2**32)


class ModbusPoller:
    """Polls `targets` on `endpoint` until cancelled, emitting RawRegisters, PollFailure and Events."""

    def __init__(
        self,
        endpoint: ModbusEndpoint,
        targets: Sequence[PollTarget],
        emit: Emit,
        *,
        clock: Callable[[], datetime] = _utc_now,
        failures_before_lost: int = 3,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._targets: dict[str, PollTarget] = {}
        self._by_unit: dict[int, str] = {}
        for t in targets:
            if t.meter_id in self._targets or t.unit in self._by_unit:
                msg = f"endpoint {endpoint.name}: meter {t.meter_id} unit {t.unit} is listed twice"
                raise ValueError(msg)
            self._targets[t.meter_id] = t
            self._by_unit[t.unit] = t.meter_id
        if failures_before_lost < 1:
            msg = f"failures_before_lost must be >= 1, got {failures_before_lost}"
            raise ValueError(msg)
        self.endpoint = endpoint
        self._emit = emit
        self._clock = clock
        self._lost_after = failures_before_lost
        self._monotonic = monotonic
        self._conn = ModbusConnection(endpoint, backoff=backoff, monotonic=monotonic)
        self._health = {t.meter_id: MeterHealth(t.meter_id, t.unit) for t in targets}

    @property
    def targets(self) -> tuple[PollTarget, ...]:
        return tuple(self._targets.values())

    @property
    def connected(self) -> bool:
        return self._conn.connected

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (poll_now and read_registers would open it again)."""
        self._conn.close()

    async def run(self) -> None:
        """Poll every target until cancelled. Meter failures are emitted, never raised."""
        try:
            if not self._targets:
                await asyncio.get_running_loop().create_future()  # nothing to poll: wait to be cancelled
            async with asyncio.TaskGroup() as tg:
                for target in self._targets.values():
                    tg.create_task(self._meter_loop(target), name=f"modbus poll {target.meter_id}")
        finally:
            self._conn.close()

    async def poll_now(self, meter_id: str) -> RawRegisters:
        """Read one meter at once (ts = now). Raises DriverError; NotFound for an unknown meter.

        Touches neither the health counters nor the comm state, and emits nothing.
        """
        target = self._targets.get(meter_id)
        if target is None:
            raise NotFound("meter", meter_id)
        return await self._read(target, self._clock())

    async def read_registers(self, unit: int, function: Function, address: int, count: int) -> tuple[int, ...]:
        """Raw read of `count` (1..125) holding or input registers of `unit`; raises DriverError."""
        function = Function(function)
        if not 1 <= unit <= 247 or not 1 <= count <= MAX_READ or not 0 <= address <= 0xFFFF - count + 1:
            msg = (
                f"{describe_read(function, address, count)} of unit {unit}: need unit 1..247, "
                f"count 1..{MAX_READ} and the registers within 0x0000..0xffff"
            )
            raise InvalidRequest(msg)
        return await self._conn.read(unit, function, address, count, meter_id=self._by_unit.get(unit))

    def health(self) -> dict[str, MeterHealth]:
        """A snapshot (copies) of every meter's health, by meter id."""
        return {meter_id: replace(h) for meter_id, h in self._health.items()}

    async def _read(self, target: PollTarget, ts: datetime) -> RawRegisters:
        blocks: list[RegisterBlock] = []
        on_wire = 0.0
        for rb in plan_reads(target.profile):  # the first failure ends the poll: no point going on
            words, spent = await self._conn.read_timed(
                target.unit, rb.function, rb.address, rb.count, meter_id=target.meter_id
            )
            blocks.append(RegisterBlock(rb.function.code, rb.address, words))
            on_wire += spent
        return RawRegisters(target.meter_id, ts, self._clock(), tuple(blocks), on_wire)

    async def _meter_loop(self, target: PollTarget) -> None:
        interval = target.interval
        offset = send_offset(target.meter_id, interval)
        now = self._clock().timestamp()
        # Boundaries are epoch + k * interval: wall-clock aligned, or phased from now if not aligned.
        epoch = 0.0 if target.align else now
        k = math.floor((now - epoch) / interval) + 1 if target.align else 0
        health = self._health[target.meter_id]
        while True:
            due = epoch + k * interval
            delay = due + offset - self._clock().timestamp()
            if delay > 2 * interval:  # the wall clock went back: find our place again
                k = math.floor((self._clock().timestamp() - epoch) / interval) + 1
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            ts = datetime.fromtimestamp(due, UTC) if target.align else self._clock()
            await self._poll_once(target, health, ts)
            # Boundaries that passed while this poll ran are skipped and counted, never queued.
            missed = math.floor((self._clock().timestamp() - due) / interval)
            if missed > 0:
                health.skipped += missed
                log.debug("meter %s: poll overran, %d poll(s) skipped", target.meter_id, missed,
                          extra={"meter_id": target.meter_id})
            k += 1 + max(missed, 0)

    async def _poll_once(self, target: PollTarget, health: MeterHealth, ts: datetime) -> None:
        health.last_attempt = self._clock()
        health.polls += 1
        try:
            raw = await self._read(target, ts)
        except DriverError as err:
            await self._failed(target, health, ts, err)
            return
        restored = health.comm_lost
        failed_before = health.consecutive_failures
        health.last_success = raw.received_at
        health.last_latency_s = raw.latency_s
        health.last_raw = raw.blocks
        health.consecutive_failures = 0
        health.comm_lost = False
        await self._emit(raw)
        if restored:
            log.info("meter %s: communication restored after %d failed polls", target.meter_id, failed_before,
                     extra={"meter_id": target.meter_id})
            detail = f"answered again after {failed_before} failed polls"
            await self._emit(Event(self._clock(), target.meter_id, EventKind.COMM_RESTORED, Severity.INFO, detail))
        elif failed_before:
            log.info("meter %s: poll succeeded again after %d failure(s)", target.meter_id, failed_before,
                     extra={"meter_id": target.meter_id})

    async def _failed(self, target: PollTarget, health: MeterHealth, ts: datetime, err: DriverError) -> None:
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error = str(err)
        health.last_error_kind = err.kind
        lost = not health.comm_lost and health.consecutive_failures >= self._lost_after
        extra = {"meter_id": target.meter_id}
        if lost:
            health.comm_lost = True
            log.warning("meter %s: communication lost after %d failed polls: %s", target.meter_id,
                        health.consecutive_failures, err, extra=extra)
        elif health.consecutive_failures == 1:
            log.info("meter %s: poll failed: %s", target.meter_id, err, extra=extra)
        else:
            log.debug("meter %s: poll failed again: %s", target.meter_id, err, extra=extra)
        await self._emit(PollFailure(target.meter_id, ts, err))
        if lost:
            event = Event(self._clock(), target.meter_id, EventKind.COMM_LOST, Severity.WARNING, str(err))
            await self._emit(event)
