"""MBusPoller: reads the meters of one M-Bus line on their schedules and emits what they sent.

The neutral poll machinery (drivers/polling/) as Modbus uses it: a schedule per meter, a circuit
breaker, health with comm_lost / comm_restored once per transition, and one bus lock per line (a
bus answers one request at a time). Each read is SND_NKE (or a CI 0x52 selection), then REQ_UD2
until the slave has no more telegrams. A read becomes one RawObjects per storage number: storage 0
at the poll's boundary, storage n at the date its own time-point record gives (a due-day value).
The status byte's bits become events when they change; manufacturer-specific data and the last
frames are kept for /v1/diag. A bad frame is a PollFailure and a dead letter with its bytes in hex;
a record whose VIF the decoder does not know is a dead letter once per meter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from drivers.base import DriverStatus, Observed
from drivers.mbus import frame
from drivers.mbus.link import Link, LinkSettings
from drivers.mbus.master import Master, Readout
from drivers.mbus.records import Record
from drivers.polling.breaker import BreakerPolicy, CircuitBreaker
from drivers.polling.buslock import BusLock
from drivers.polling.health import LatencyWindow, MeterHealth
from drivers.polling.schedule import Schedule, send_offset
from gateway.errors import DriverError, NotFound
from gateway.model import DeadLetter, Event, EventKind, Severity
from gateway.model.samples import ObjectValue, PollFailure, RawObjects, Sample

log = logging.getLogger(__name__)
Emit = Callable[[Sample], Awaitable[None]]
SOURCE = "mbus"
#: Status byte bits (EN 13757-3 §6.2): what each means, and how bad.
_STATUS_BITS = ((0x04, "power low (battery)", Severity.WARNING), (0x08, "permanent error", Severity.CRITICAL),
                (0x10, "temporary error", Severity.WARNING))
_APPLICATION = {1: "application busy", 2: "application error", 3: "abnormal condition / alarm"}


@dataclass(frozen=True, slots=True)
class MBusTarget:
    meter_id: str
    primary: int | None  # 0..250, or None: selected by `secondary`
    secondary: str | None
    interval: float

    @property
    def where(self) -> str:
        return f"primary {self.primary}" if self.primary is not None else f"secondary {self.secondary}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def status_problems(status: int) -> list[tuple[str, Severity]]:
    out = [(text, sev) for bit, text, sev in _STATUS_BITS if status & bit]
    if status & 0x03:
        out.insert(0, (_APPLICATION[status & 0x03], Severity.WARNING))
    return out


class MBusPoller:
    """Polls `targets` on one line until cancelled (the driver contract, drivers.base.Driver)."""

    def __init__(self, bus: str, link: LinkSettings, targets: Sequence[MBusTarget], emit: Emit, *,
                 timeout: float = 1.0, breaker: BreakerPolicy | None = None, failures_before_lost: int = 3,
                 zone: tzinfo = UTC, retries: int = 1,
                 clock: Callable[[], datetime] = _utc_now, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.link = link
        self._targets = {t.meter_id: t for t in targets}
        self._emit = emit
        self._clock = clock
        self._monotonic = monotonic
        self._lost_after = failures_before_lost
        self._master = Master(Link(link), timeout, bus, retries)
        self._lock = BusLock()
        self._zone = zone  # the meters' clocks: their dates and times are local
        self._health = {t.meter_id: MeterHealth(t.meter_id, t.primary if t.primary is not None else 0xFD)
                        for t in targets}
        self._latency = {t.meter_id: LatencyWindow() for t in targets}
        self._breakers = {t.meter_id: CircuitBreaker(breaker) for t in targets}
        self._status: dict[str, int] = {}
        self._unknown: dict[str, set[str]] = {t.meter_id: set() for t in targets}
        self.last: dict[str, dict[str, Any]] = {}  # per meter: the last read's frames and raw records
        #: Per meter, the historic values (storage n > 0) last emitted: a due-day value is sent when it
        #: changes, not with every read (it would be the same old reading, flagged stale, each time).
        self._historic: dict[str, dict[tuple[int, int], tuple[datetime, tuple[ObjectValue, ...]]]] = {}
        self.frame_errors = 0

    # -- the driver contract --------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"mbus:{self.bus}"

    @property
    def target(self) -> str:
        return self.bus

    def meter_ids(self) -> tuple[str, ...]:
        return tuple(self._targets)

    @property
    def connected(self) -> bool:
        return self._master.link.is_open

    def status(self, observed: Observed) -> DriverStatus:
        rate = round(observed.polls_per_second(self.bus), 3)
        return DriverStatus(label=f"mbus {self.bus}", where=f"{self.link.transport} {self.link.address}",
                            connected=self.connected, rate=rate, rate_unit="polls/s",
                            errors_by_kind=dict(observed.poll_failures(self.bus)), meters=len(self._targets),
                            detail={"bus": self.bus, "transport": self.link.transport, "address": self.link.address,
                                    "frame_errors": self.frame_errors, "retries": self._master.retried})

    def meter_health(self, meter_id: str) -> MeterHealth | None:
        h = self._health.get(meter_id)
        if h is None:
            return None
        p50, p90, p99 = self._latency[meter_id].percentiles(50, 90, 99)
        return replace(h, latency_p50_s=p50, latency_p90_s=p90, latency_p99_s=p99,
                       breaker=self._breakers[meter_id].state.value)

    def health(self) -> dict[str, MeterHealth]:
        return {m: h for m in self._health if (h := self.meter_health(m)) is not None}

    async def poll_now(self, meter_id: str) -> RawObjects:
        """Read one meter at once (a technician asked): its storage-0 values; nothing is emitted."""
        target = self._targets.get(meter_id)
        if target is None:
            raise NotFound("meter", meter_id)
        readout = await self._read(target)
        now = self._clock()
        return next((s for _, s in self._samples(target, readout, now, now)), RawObjects(meter_id, now, now, ()))

    async def run(self) -> None:
        try:
            if not self._targets:
                await asyncio.get_running_loop().create_future()
            async with asyncio.TaskGroup() as tg:
                for t in self._targets.values():
                    tg.create_task(self._loop(t), name=f"mbus poll {t.meter_id}")
        finally:
            self._master.link.close()

    # -- polling --------------------------------------------------------------------------------
    async def _read(self, target: MBusTarget) -> Readout:
        where = f"{self.bus} {target.where}"
        async with self._lock.hold():
            if target.primary is not None:
                return await self._master.read(target.primary, where)
            assert target.secondary is not None
            await self._master.select(target.secondary, where, retries=True)
            return await self._master.read(frame.ADDRESS_SELECTED, where)

    async def _loop(self, target: MBusTarget) -> None:
        schedule = Schedule(target.interval, align=True, offset=send_offset(target.meter_id, target.interval))
        breaker = self._breakers[target.meter_id]
        while True:
            slot = schedule.next(self._clock().timestamp())
            delay = slot.send_at - self._clock().timestamp()
            await asyncio.sleep(max(0.0, delay))
            if breaker.allow(self._monotonic()):
                await self._poll_once(target, datetime.fromtimestamp(slot.due, UTC))
            else:
                self._health[target.meter_id].breaker_skips += 1
            self._health[target.meter_id].skipped += schedule.finished(slot, self._clock().timestamp())

    async def _poll_once(self, target: MBusTarget, ts: datetime) -> None:
        health, breaker = self._health[target.meter_id], self._breakers[target.meter_id]
        health.last_attempt = self._clock()
        health.polls += 1
        try:
            readout = await self._read(target)
        except DriverError as err:
            err.meter_id = target.meter_id
            await self._failed(target, health, breaker, ts, err)
            return
        restored, failed_before = health.comm_lost, health.consecutive_failures
        breaker.success()
        health.last_success = received = self._clock()
        health.last_latency_s = readout.latency_s
        self._latency[target.meter_id].add(readout.latency_s)
        health.consecutive_failures = 0
        health.comm_lost = False
        sent = self._historic.setdefault(target.meter_id, {})
        for key, sample in self._samples(target, readout, ts, received):
            if key[0]:
                if sent.get(key) == (sample.ts, sample.values):
                    continue
                sent[key] = (sample.ts, sample.values)
            await self._emit(sample)
        await self._diagnose(target, readout, received)
        if restored:
            await self._emit(Event(received, target.meter_id, EventKind.COMM_RESTORED, Severity.INFO,
                                   f"answered again after {failed_before} failed reads"))

    async def _failed(self, target: MBusTarget, health: MeterHealth, breaker: CircuitBreaker, ts: datetime,
                      err: DriverError) -> None:
        health.failures += 1
        health.consecutive_failures += 1
        health.last_error, health.last_error_kind = str(err), err.kind
        lost = not health.comm_lost and health.consecutive_failures >= self._lost_after
        health.comm_lost = health.comm_lost or lost
        breaker.failure(self._monotonic())
        if isinstance(err, frame.FrameError):
            self.frame_errors += 1
            await self._emit(DeadLetter(ts=self._clock(), source=SOURCE, where=f"{self.bus} {target.where}",
                                        reason="frame", detail=err.detail, payload=err.raw.hex(" "),
                                        meter_id=target.meter_id))
        log.info("meter %s: M-Bus read failed: %s", target.meter_id, err, extra={"meter_id": target.meter_id})
        await self._emit(PollFailure(target.meter_id, ts, err))
        if lost:
            await self._emit(Event(self._clock(), target.meter_id, EventKind.COMM_LOST, Severity.WARNING, str(err)))

    def _samples(self, target: MBusTarget, readout: Readout, ts: datetime, received: datetime
                 ) -> list[tuple[tuple[int, int], RawObjects]]:
        """One RawObjects per storage number with a time: storage 0 at `ts`, the others at the
        date of their own time-point record (without one they cannot be placed and are kept raw)."""
        by_storage: dict[tuple[int, int], list[Record]] = {}
        for telegram in readout.telegrams:
            for rec in telegram.records:
                by_storage.setdefault((rec.storage, rec.subunit), []).append(rec)
        raw = b"".join(readout.frames)
        out = []
        for (storage, _subunit), recs in sorted(by_storage.items()):
            values: list[ObjectValue] = [(r.code, r.value, r.quantity.unit or None) for r in recs
                                         if isinstance(r.value, Decimal)]
            if not values:
                continue
            at = ts if storage == 0 else _time_of(recs, self._zone)
            if at is None:
                continue
            out.append(((storage, _subunit), RawObjects(target.meter_id, at, received, tuple(values),
                                                        raw.hex(" ").encode(), recorded=storage != 0)))
        return out

    async def _diagnose(self, target: MBusTarget, readout: Readout, received: datetime) -> None:
        """Status byte changes as events; unknown VIFs as a dead letter once; raw data for /v1/diag."""
        first = readout.telegrams[0]
        before = self._status.get(target.meter_id, 0)
        self._status[target.meter_id] = first.status
        if first.status != before:
            raised = status_problems(first.status & ~before)
            for text, severity in raised:
                await self._emit(Event(received, target.meter_id, EventKind.ANOMALY, severity,
                                       f"M-Bus status {first.status:#04x}: {text}"))
            cleared = status_problems(before & ~first.status)
            if cleared:
                text = ", ".join(t for t, _ in cleared)
                await self._emit(Event(received, target.meter_id, EventKind.ANOMALY, Severity.INFO,
                                       f"M-Bus status {first.status:#04x}: cleared {text}"))
        before_id = self.last.get(target.meter_id, {}).get("secondary")
        if before_id is not None and before_id != first.secondary():
            # Another meter answers at this address: an exchange (its counter starts again) or a
            # wrong address. VEE will see the counter drop; this says why.
            await self._emit(Event(received, target.meter_id, EventKind.ANOMALY, Severity.WARNING,
                                   f"M-Bus {target.where} now answers as {first.secondary()}, was {before_id}: "
                                   "meter exchanged or readdressed"))
        seen = self._unknown[target.meter_id]
        for t in readout.telegrams:
            for rec in t.records:
                if rec.quantity.name.startswith("vif_") and rec.code not in seen:
                    seen.add(rec.code)
                    await self._emit(DeadLetter(ts=received, source=SOURCE, where=f"{self.bus} {target.where}",
                                                reason="unknown_vif", detail=f"{rec.code}: VIF {rec.vif:#04x} "
                                                f"VIFE {bytes(rec.vifes).hex(' ')} not known; kept raw",
                                                payload=rec.data.hex(" "), meter_id=target.meter_id))
        self.last[target.meter_id] = {
            "secondary": first.secondary(), "status": first.status, "access": first.access,
            "frames": [f.hex(" ") for f in readout.frames],
            "manufacturer_data": "".join(t.manufacturer_data.hex(" ") for t in readout.telegrams),
            "records": [{"code": r.code, "storage": r.storage, "value": str(r.value), "unit": r.quantity.unit}
                        for t in readout.telegrams for r in t.records],
        }


def _time_of(records: list[Record], zone: tzinfo) -> datetime | None:
    """The time of a storage number's values: its date-time record, else its date at 00:00, in the
    meters' zone (a due day is midnight where the meter is)."""
    for r in records:
        if isinstance(r.value, datetime):
            return r.value.replace(tzinfo=zone).astimezone(UTC)
        if isinstance(r.value, date):
            return datetime(r.value.year, r.value.month, r.value.day, tzinfo=zone).astimezone(UTC)
    return None


__all__ = ["MBusPoller", "MBusTarget", "status_problems"]
