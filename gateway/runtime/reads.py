"""Special reads: the account system asks for a meter to be read now, with a reason (issue 25).

A polled meter (a driver with the PollNow capability: Modbus today, DLMS and M-Bus as they come) is
read at once through its driver (the same bus lock as its schedule) and the answer goes down the
pipeline like any poll: normalised, VEE-checked, spooled, stored, in the feed once. A meter that
pushes (PAYG over MQTT) cannot be asked by any vendor vocabulary the gateway knows, so its latest
message no older than `[special_reads] max_age` stands in, and the result says so. Each read's
record (who asked, when, the outcome, the values) is kept in the store: it is the audit, and exports
give the read's readings its reason."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from drivers.base import PollNow
from gateway.errors import DriverError, InvalidRequest, NotFound
from gateway.model import Channel, MeterStatus
from gateway.model.reads import ReadReason, ReadState, SpecialRead
from gateway.normalise.normaliser import Normaliser
from gateway.runtime.view import GatewayView
from storage.records import Conflict

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReadDesk:
    """Takes special reads one task each (a slow meter never holds up another's)."""

    def __init__(self, gateway: GatewayView, *, timeout: float, max_age: float,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.gw = gateway
        self.timeout = timeout
        self.max_age = timedelta(seconds=max_age)
        self._clock = clock
        self._queue: asyncio.Queue[SpecialRead] = asyncio.Queue()
        self._open: set[str] = set()  # meters with a read queued or in progress here

    async def request(self, meter_id: str, reason: ReadReason | str, channels: Sequence[Channel] | None = None,
                      key_id: str | None = None) -> SpecialRead:
        """Queue a special read. NotFound (not a meter of this gateway), InvalidRequest (inactive,
        or the store is not ready), KeyConflict (a read of this meter is already under way)."""
        store = self.gw.store
        if meter_id not in self.gw.facts:
            raise NotFound("meter", meter_id)
        if store is None or not self.gw.store_ready.is_set():
            raise InvalidRequest("special reads wait for the store; try again in a moment")
        meter = await store.get_meter(meter_id)
        if meter is not None and meter.status is not MeterStatus.ACTIVE:
            raise Conflict(f"meter {meter_id} is {meter.status.value}: it is not read")
        under_way = await store.open_special_reads(meter_id)
        if meter_id in self._open or under_way:
            held = under_way[0].correlation_id if under_way else "one"
            raise Conflict(f"meter {meter_id}: special read {held} is already under way; ask its state with "
                              f"GET /v1/reads/{held}")
        read = SpecialRead(str(uuid.uuid4()), meter_id, ReadReason(reason), self._clock(),
                           channels=tuple(channels) if channels else None, key_id=key_id)
        await store.save_special_read(read)
        self._open.add(meter_id)
        self._queue.put_nowait(read)
        return read

    async def run(self) -> None:
        """Until cancelled: each queued read in its own task."""
        async with asyncio.TaskGroup() as tg:
            while True:
                read = await self._queue.get()
                tg.create_task(self._take(read), name=f"special read {read.correlation_id}")

    async def _take(self, read: SpecialRead) -> None:
        store = self.gw.store
        assert store is not None
        try:
            read = read.moved(ReadState.IN_PROGRESS, self._clock())
            await store.save_special_read(read)
            read = await self._read(read)
        except Exception as exc:
            log.warning("special read %s of %s failed: %s", read.correlation_id, read.meter_id, exc)
            read = read.moved(ReadState.FAILED, self._clock(), detail=f"{type(exc).__name__}: {exc}")
        finally:
            self._open.discard(read.meter_id)
        await store.save_special_read(read)
        log.info("special read %s of %s (%s): %s", read.correlation_id, read.meter_id, read.reason.value,
                 read.state.value)

    async def _read(self, read: SpecialRead) -> SpecialRead:
        driver = self.gw.driver_for(read.meter_id)
        if isinstance(driver, PollNow):
            return await self._poll(read, driver)
        return await self._latest(read)

    async def _poll(self, read: SpecialRead, driver: PollNow) -> SpecialRead:
        try:
            raw = await asyncio.wait_for(driver.poll_now(read.meter_id), self.timeout)
        except TimeoutError:
            return read.moved(ReadState.TIMED_OUT, self._clock(),
                              detail=f"the meter did not answer within {self.timeout:g} s")
        except DriverError as exc:
            return read.moved(ReadState.FAILED, self._clock(), detail=f"the meter's answer: {exc}")
        facts = self.gw.facts[read.meter_id]
        # What the pipeline will store, to say in the record (a throw-away normaliser, as diagnostics').
        preview = Normaliser({read.meter_id: facts.profile} if facts.profile is not None else {}, {}).sample(raw)
        pipeline = self.gw.pipeline
        assert pipeline is not None
        await pipeline.emit(raw)
        values = tuple((r.channel, r.value) for r in preview.readings
                       if read.channels is None or r.channel in read.channels)
        missing = [c.value for c in read.channels or () if c not in {ch for ch, _ in values}]
        state = ReadState.PARTIAL if missing or not values else ReadState.COMPLETED
        detail = "polled now" + (f"; not in the meter's answer: {', '.join(missing)}" if missing else "")
        ts = preview.readings[0].ts if preview.readings else raw.ts
        return read.moved(state, self._clock(), ts=ts, values=values, detail=detail)

    async def _latest(self, read: SpecialRead) -> SpecialRead:
        store = self.gw.store
        assert store is not None
        now = self._clock()
        readings = [r for r in await store.latest_readings(read.meter_id)
                    if now - r.ts <= self.max_age and (read.channels is None or r.channel in read.channels)]
        balance = await store.latest_balance(read.meter_id)
        fresh_balance = balance is not None and now - balance.ts <= self.max_age
        if not readings and not fresh_balance:
            return read.moved(ReadState.FAILED, now, detail=(
                f"meter {read.meter_id} pushes its data and its vendor has no read request the gateway knows; "
                f"nothing arrived within the last {self.max_age.total_seconds():g} s"))
        parts = ["the meter's latest message (it pushes its data; no read request is known for its vendor)"]
        if fresh_balance and balance is not None:
            parts.append(f"balance {balance.balance} {balance.currency} at {balance.ts.isoformat()}")
        ts = max((r.ts for r in readings), default=None)
        return read.moved(ReadState.COMPLETED, now, ts=ts, values=tuple((r.channel, r.value) for r in readings),
                          detail="; ".join(parts))
