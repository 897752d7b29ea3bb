"""ModbusPoller: polls the meters of one endpoint on their schedules and emits what it read.

One task per meter inside one TaskGroup; the endpoint's connection (and its lock) is the only
thing they share, and each hold of the lock is one poll, which its first unanswered read ends
(after the endpoint's timeout), so a slow or dead meter costs its own slot, not the fleet's
schedule; its circuit breaker stops it from costing bus time at all after a while. The bus is
served by priority (drivers/polling/buslock.py): a meter whose last poll failed or was slow polls
after the healthy meters of its slot, a retry after every first try, and neither starts just
before a healthy meter's send, so the healthy meters keep their rate beside dead ones. Each
meter's health is a small state machine (ok -> failing -> lost -> ok) that emits comm_lost /
comm_restored once per transition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from drivers.base import DriverStatus, Observed
from drivers.modbus.connection import ConnectionStats, ModbusConnection, ModbusEndpoint, describe_read
from drivers.modbus.plan import ReadBlock, plan_reads
from drivers.polling.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from drivers.polling.buslock import FAILING, HEALTHY, BusLock
from drivers.polling.health import LatencyWindow, MeterHealth
from drivers.polling.schedule import Schedule, Slot, send_offset, send_window
from gateway.backoff import Backoff
from gateway.errors import DriverError, InvalidRequest, NotFound
from gateway.model import Event, EventKind, Severity
from gateway.model.profiles import DeviceProfile, Function
from gateway.model.samples import PollFailure, RawRegisters, RegisterBlock

log = logging.getLogger(__name__)

Emit = Callable[[RawRegisters | PollFailure | Event], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]

MAX_READ = 125  # registers per FC 03/04 request (Modbus Application Protocol V1.1b3)
#: A poll that took more than this fraction of the endpoint's timeout marks its meter slow: its
#: next poll waits for the healthy meters' (drivers/polling/buslock.py).
_SLOW = 0.25
#: The margin of bus time kept clear before a healthy meter's send, as a fraction of its interval.
_MARGIN = 0.2
#: Waiting out a healthy meter's send, wait this much longer: by then it waits for the bus itself.
_AFTER_SEND = 0.005


@dataclass(frozen=True, slots=True)
class PollTarget:
    """One meter on the endpoint: its unit id, register map and schedule.

    `interval` 0 polls back to back (benchmarks, commissioning). `align` stamps each reading
    with the interval boundary its poll belongs to; `jitter` is the window (s) after the
    boundary over which meters spread their sends (None: 10 % of the interval, at most 5 s).
    """

    meter_id: str
    unit: int  # Modbus device id 1..247
    profile: DeviceProfile
    interval: float  # seconds
    align: bool = True
    jitter: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.unit <= 247 or self.interval < 0 or (self.jitter is not None and self.jitter < 0):
            msg = (f"meter {self.meter_id}: need unit in 1..247, interval >= 0 and jitter >= 0 "
                   f"(got {self.unit}, {self.interval}, {self.jitter})")
            raise ValueError(msg)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ModbusPoller:
    """Polls `targets` on `endpoint` until cancelled, emitting RawRegisters, PollFailure and Events.

    `clock` (wall time, for schedules and timestamps), `monotonic` (for backoffs and breakers)
    and `sleep` are injected so tests can move time instead of waiting for it.
    """

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
        sleep: Sleep = asyncio.sleep,
        breaker: BreakerPolicy | None = None,
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
        self._sleep = sleep
        #: The next send of each healthy meter (epoch s) and the bus time kept clear before it.
        self._sends: dict[str, tuple[float, float]] = {}
        self._conn = ModbusConnection(endpoint, backoff=backoff, monotonic=monotonic,
                                      bus=BusLock(self._clear_of_healthy_sends, sleep))
        # Plans are computed here once per target, never per poll.
        self._plans: dict[str, tuple[ReadBlock, ...]] = {
            t.meter_id: plan_reads(t.profile, endpoint.max_gap, endpoint.max_registers) for t in targets
        }
        # Function code and address of each block of a plan, for the RegisterBlocks of every poll.
        self._codes = {m: [rb.function.code for rb in plan] for m, plan in self._plans.items()}
        self._starts = {m: [rb.address for rb in plan] for m, plan in self._plans.items()}
        self._health = {t.meter_id: MeterHealth(t.meter_id, t.unit) for t in targets}
        self._latency = {t.meter_id: LatencyWindow() for t in targets}
        self._breakers = {t.meter_id: CircuitBreaker(breaker) for t in targets}
        self._last_boundary: tuple[float, datetime] | None = None

    @property
    def targets(self) -> tuple[PollTarget, ...]:
        return tuple(self._targets.values())

    # -- the driver contract (drivers.base.Driver) ------------------------------------------------
    @property
    def name(self) -> str:
        return f"modbus:{self.endpoint.name}"

    @property
    def target(self) -> str:
        return self.endpoint.name

    def meter_ids(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def status(self, observed: Observed) -> DriverStatus:
        """The endpoint's link for diagnostics: the connection's counters, and the polls the
        pipeline saw from it (rate and errors by kind)."""
        ep, stats = self.endpoint, self.connection_stats()
        rate = round(observed.polls_per_second(ep.name), 3)
        return DriverStatus(
            label=f"modbus {ep.name}", where=f"{ep.kind} {ep.address}", connected=self.connected, rate=rate,
            rate_unit="polls/s", errors_by_kind=dict(observed.poll_failures(ep.name)), meters=len(self._targets),
            detail={"endpoint": ep.name, "transport": ep.kind, "address": ep.address, "polls_per_s": rate,
                    "connects": stats.connects, "requests": stats.requests, "timeouts": stats.timeouts,
                    "retries": stats.retries, "drops": stats.drops})

    def meter_health(self, meter_id: str) -> MeterHealth | None:
        """A snapshot (a copy) of one meter's health; None for a meter not polled here."""
        h = self._health.get(meter_id)
        if h is None:
            return None
        p50, p90, p99 = self._latency[meter_id].percentiles(50, 90, 99)
        return replace(h, latency_p50_s=p50, latency_p90_s=p90, latency_p99_s=p99,
                       breaker=self._breakers[meter_id].state.value)

    async def read_raw(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """`read_registers` of {"unit", "function", "address", "count"}: {"words": (...)}."""
        words = await self.read_registers(request["unit"], Function(request["function"]), request["address"],
                                          request["count"])
        return {"words": words}

    @property
    def connected(self) -> bool:
        return self._conn.connected

    def connection_stats(self) -> ConnectionStats:
        """A copy of the endpoint's connection counters."""
        return replace(self._conn.stats)

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

        Bypasses the circuit breaker (a technician asked), touches neither the health
        counters nor the comm state, and emits nothing.
        """
        target = self._targets.get(meter_id)
        if target is None:
            raise NotFound("meter", meter_id)
        return await self._read(target, self._clock())

    async def read_registers(self, unit: int, function: Function, address: int, count: int) -> tuple[int, ...]:
        """Raw read of `count` (1..125) holding or input registers of `unit`; raises DriverError.

        Read-only function codes only (03, 04): nothing here can change a device.
        """
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
        return {meter_id: h for meter_id in self._health if (h := self.meter_health(meter_id)) is not None}

    async def _read(self, target: PollTarget, ts: datetime, priority: int = HEALTHY) -> RawRegisters:
        plan = self._plans[target.meter_id]
        # One hold of the bus for the whole poll; the first failure ends it: no point going on.
        words, on_wire = await self._conn.read_blocks(target.unit, plan, meter_id=target.meter_id, priority=priority)
        blocks = tuple(map(RegisterBlock, self._codes[target.meter_id], self._starts[target.meter_id], words))
        return RawRegisters(target.meter_id, ts, self._clock(), blocks, on_wire)

    def _now(self) -> float:
        return self._clock().timestamp()

    def _boundary(self, due: float) -> datetime:
        """The datetime of an interval boundary; the meters of a round share theirs, so it is made once."""
        made = self._last_boundary
        if made is None or made[0] != due:
            made = self._last_boundary = (due, datetime.fromtimestamp(due, UTC))
        return made[1]

    async def _meter_loop(self, target: PollTarget) -> None:
        offset = send_offset(target.meter_id, target.interval, target.jitter) if target.interval else 0.0
        window = send_window(target.interval, target.jitter)
        # Bus time kept clear before this meter's sends while it is healthy: what a timeout longer
        # than the interval would eat of its slot, and a margin; at most half the interval.
        guard = min(max(0.0, self.endpoint.timeout - target.interval) + min(target.interval * _MARGIN, 1.0),
                    target.interval / 2)
        schedule = Schedule(target.interval, align=target.align, offset=offset)
        health = self._health[target.meter_id]
        breaker = self._breakers[target.meter_id]
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # On Python 3.11, asyncio.wait_for inside pymodbus can swallow a cancel that
                # races a reply; without this check the meter would poll on and shutdown hang.
                raise asyncio.CancelledError
            now = self._now()
            slot = schedule.next(now)
            if target.interval and self._priority(health, breaker) == HEALTHY:
                self._sends[target.meter_id] = (slot.send_at, guard)
            else:
                self._sends.pop(target.meter_id, None)
            delay = slot.send_at - now
            if delay > 0:
                await self._sleep(delay)
            else:
                await asyncio.sleep(0)  # back-to-back polls still let the others run
            # Sent: from here it waits for the bus itself (as a waiter, with its priority).
            self._sends.pop(target.meter_id, None)
            if breaker.allow(self._monotonic()):
                ts = self._boundary(slot.due) if target.align and target.interval else self._clock()
                priority = self._priority(health, breaker)
                if priority != HEALTHY and target.interval:
                    # After the healthy meters of this slot have sent: their polls go first.
                    late = slot.due + window - self._now()
                    if late > 0:
                        await self._sleep(late)
                await self._poll_once(target, health, breaker, ts, priority)
            else:
                health.breaker_skips += 1
                if not target.interval:  # no schedule to wait on: wait out the cool-down
                    await self._sleep(max(0.0, breaker.open_until - self._monotonic()))
            self._overran(target, health, schedule, slot)

    def _clear_of_healthy_sends(self) -> float:
        """Seconds until no healthy meter sends within its guard: a poll of lower priority that
        started sooner could hold the bus through that meter's slot."""
        now = self._now()
        # Sends already due count too: their meter's task may not have run yet to take its place.
        soon = [send for send, guard in self._sends.values() if send <= now + guard]
        return max(0.0, max(soon) - now) + _AFTER_SEND if soon else 0.0

    def _priority(self, health: MeterHealth, breaker: CircuitBreaker) -> int:
        """HEALTHY for a meter that answered its last poll promptly; FAILING for one that failed it, whose
        breaker is not closed, or that took more than a quarter of the timeout (a slow meter)."""
        slow = health.last_latency_s is not None and health.last_latency_s > self.endpoint.timeout * _SLOW
        failing = health.consecutive_failures or breaker.state is not BreakerState.CLOSED or slow
        return FAILING if failing else HEALTHY

    def _overran(self, target: PollTarget, health: MeterHealth, schedule: Schedule, slot: Slot) -> None:
        missed = schedule.finished(slot, self._now())
        if missed:
            health.skipped += missed
            log.debug("meter %s: poll overran, %d slot(s) skipped", target.meter_id, missed,
                      extra={"meter_id": target.meter_id})

    async def _poll_once(self, target: PollTarget, health: MeterHealth, breaker: CircuitBreaker,
                         ts: datetime, priority: int = HEALTHY) -> None:
        health.last_attempt = self._clock()
        health.polls += 1
        try:
            raw = await self._read(target, ts, priority)
        except DriverError as err:
            await self._failed(target, health, breaker, ts, err)
            return
        restored = health.comm_lost
        failed_before = health.consecutive_failures
        breaker.success()
        health.last_success = raw.received_at
        health.last_latency_s = raw.latency_s
        self._latency[target.meter_id].add(raw.latency_s)
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

    async def _failed(self, target: PollTarget, health: MeterHealth, breaker: CircuitBreaker, ts: datetime,
                      err: DriverError) -> None:
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
        was_half_open = breaker.state is BreakerState.HALF_OPEN
        if breaker.failure(self._monotonic()) and not was_half_open:
            log.info("meter %s: circuit breaker open after %d failed polls; probing again in %.0f s",
                     target.meter_id, breaker.failures, breaker.open_until - self._monotonic(), extra=extra)
        await self._emit(PollFailure(target.meter_id, ts, err))
        if lost:
            event = Event(self._clock(), target.meter_id, EventKind.COMM_LOST, Severity.WARNING, str(err))
            await self._emit(event)
