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
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from drivers.base import PollNow
from gateway.config.schema import SpecialReadsSection
from gateway.errors import DriverError, GatewayError, InvalidRequest, MeterTimeout, NotFound
from gateway.model import Channel, MeterStatus, Reading
from gateway.model.reads import ReadReason, ReadState, SpecialRead
from gateway.runtime.diag import preview as diag_preview
from gateway.runtime.view import GatewayView
from storage.records import Conflict

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReadDesk:
    """Takes special reads one task each (a slow meter never holds up another's). A read's failure,
    the store's included, is that read's outcome: nothing here can stop the gateway."""

    def __init__(self, gateway: GatewayView, *, timeout: float, max_age: float,
                 timeouts: Mapping[str, float] | None = None, clock: Callable[[], datetime] = _utcnow) -> None:
        self.gw = gateway
        self.timeout = timeout
        self.timeouts = dict(timeouts or {})  # by driver protocol ("modbus", "dlms", ...)
        self.max_age = timedelta(seconds=max_age)
        self._clock = clock
        self._queue: asyncio.Queue[SpecialRead] = asyncio.Queue()
        self._open: set[str] = set()  # meters with a read queued or in progress here

    @classmethod
    def configured(cls, gateway: GatewayView, section: SpecialReadsSection) -> ReadDesk:
        return cls(gateway, timeout=section.timeout, max_age=section.max_age, timeouts=section.timeouts)

    async def request(self, meter_id: str, reason: ReadReason | str, channels: Sequence[Channel] | None = None,
                      key_id: str | None = None) -> SpecialRead:
        """Queue a special read. NotFound (not a meter of this gateway), InvalidRequest (the store is
        not ready), Conflict (inactive, or a read of this meter is already under way)."""
        store = self.gw.store
        if meter_id not in self.gw.facts:
            raise NotFound("meter", meter_id)
        if store is None or not self.gw.store_ready.is_set():
            raise InvalidRequest("special reads wait for the store; try again in a moment")
        if meter_id in self._open:  # claimed before any await: two requests at once get one read
            raise Conflict(f"meter {meter_id}: a special read is already under way")
        self._open.add(meter_id)
        try:
            meter = await store.get_meter(meter_id)
            if meter is not None and meter.status is not MeterStatus.ACTIVE:
                raise Conflict(f"meter {meter_id} is {meter.status.value}: it is not read")
            under_way = await store.open_special_reads(meter_id)
            if under_way:  # another gateway sharing the store took it
                held = under_way[0].correlation_id
                raise Conflict(f"meter {meter_id}: special read {held} is already under way; ask its state with "
                               f"GET /v1/reads/{held}")
            read = SpecialRead(str(uuid.uuid4()), meter_id, ReadReason(reason), self._clock(),
                               channels=tuple(channels) if channels else None, key_id=key_id)
            await store.save_special_read(read)
        except BaseException:
            self._open.discard(meter_id)
            raise
        self._queue.put_nowait(read)
        return read

    async def run(self) -> None:
        """Until cancelled: first close the reads a stopped gateway left open, then each queued read
        in its own task."""
        await self.gw.store_ready.wait()
        await self._recover()
        async with asyncio.TaskGroup() as tg:
            while True:
                read = await self._queue.get()
                tg.create_task(self._take(read), name=f"special read {read.correlation_id}")

    async def _recover(self) -> None:
        store = self.gw.store
        assert store is not None
        for meter_id in self.gw.facts:
            if meter_id in self._open:
                continue
            try:
                for read in await store.open_special_reads(meter_id):
                    await store.save_special_read(read.moved(
                        ReadState.FAILED, self._clock(), detail="interrupted: the gateway stopped before it finished"))
            except (GatewayError, OSError) as exc:
                log.warning("special reads of %s left open by a stop could not be closed: %s", meter_id, exc)

    async def _take(self, read: SpecialRead) -> None:
        store = self.gw.store
        assert store is not None
        deadline = asyncio.get_running_loop().time() + self._timeout_of(read.meter_id)
        try:
            read = read.moved(ReadState.IN_PROGRESS, self._clock())
            await store.save_special_read(read)
            read = await self._read(read, deadline)
        except asyncio.CancelledError:
            read = read.moved(ReadState.FAILED, self._clock(), detail="interrupted: the gateway stopped")
            with contextlib.suppress(Exception):
                await asyncio.shield(store.save_special_read(read))
            self._open.discard(read.meter_id)
            raise
        except Exception as exc:
            log.warning("special read %s of %s failed: %s", read.correlation_id, read.meter_id, exc)
            read = read.moved(ReadState.FAILED, self._clock(), detail=f"{type(exc).__name__}: {exc}")
        self._open.discard(read.meter_id)
        try:
            await store.save_special_read(read)
        except Exception as exc:
            log.warning("special read %s of %s (%s) could not be recorded: %s", read.correlation_id, read.meter_id,
                        read.state.value, exc)
            return
        log.info("special read %s of %s (%s): %s", read.correlation_id, read.meter_id, read.reason.value,
                 read.state.value)

    def _timeout_of(self, meter_id: str) -> float:
        driver = self.gw.driver_for(meter_id)
        protocol = driver.name.split(":", 1)[0] if driver is not None else ""
        return self.timeouts.get(protocol, self.timeout)

    async def _read(self, read: SpecialRead, deadline: float) -> SpecialRead:
        driver = self.gw.driver_for(read.meter_id)
        if isinstance(driver, PollNow):
            return await self._poll(read, driver, deadline)
        return await self._latest(read)

    async def _poll(self, read: SpecialRead, driver: PollNow, deadline: float) -> SpecialRead:
        loop = asyncio.get_running_loop()
        waited = f"the meter did not answer within {self._timeout_of(read.meter_id):g} s"
        try:
            async with asyncio.timeout_at(deadline):
                raw = await driver.poll_now(read.meter_id)
        except (TimeoutError, MeterTimeout) as exc:
            detail = waited if isinstance(exc, TimeoutError) else f"{waited}: {exc}"
            return read.moved(ReadState.TIMED_OUT, self._clock(), detail=detail)
        except DriverError as exc:
            return read.moved(ReadState.FAILED, self._clock(), detail=f"the meter's answer: {exc}")
        # Which channels the answer holds (diagnostics' preview); what counts is what the store then
        # holds at the read's time.
        serving = self.gw.driver_for(read.meter_id)
        protocol = serving.name.split(":", 1)[0] if serving is not None else ""
        preview = diag_preview(self.gw, read.meter_id, protocol, raw)
        ts = preview.readings[0].ts if preview.readings else raw.ts
        pipeline = self.gw.pipeline
        assert pipeline is not None
        try:
            async with asyncio.timeout_at(deadline):
                await pipeline.emit(raw)
        except TimeoutError:
            return read.moved(ReadState.FAILED, self._clock(), ts=ts,
                              detail="read, but the pipeline did not take it in time (is the spool blocked?)")
        wanted = {r.channel for r in preview.readings if read.channels is None or r.channel in read.channels}
        stored = await self._stored(read.meter_id, ts, wanted, deadline=max(deadline, loop.time() + 10.0))
        values = tuple((r.channel, r.value) for r in stored)
        missing = sorted(c.value for c in (read.channels or wanted) if c not in {r.channel for r in stored})
        if not values:
            return read.moved(ReadState.FAILED, self._clock(), ts=ts, detail=(
                "read, but nothing of it reached the store in time (see /v1/diag/deadletters"
                + (f"; asked for: {', '.join(missing)}" if missing else "") + ")"))
        state = ReadState.PARTIAL if missing else ReadState.COMPLETED
        detail = "polled now" + (f"; not stored: {', '.join(missing)}" if missing else "")
        return read.moved(state, self._clock(), ts=ts, values=values, detail=detail)

    async def _stored(self, meter_id: str, ts: datetime, wanted: set[Channel], *, deadline: float) -> list[Reading]:
        """The meter's readings at `ts` of the `wanted` channels once the store holds them all, or what
        it holds at `deadline` (the spool forwards in batches)."""
        store = self.gw.store
        assert store is not None
        loop = asyncio.get_running_loop()
        while True:
            rows = [r for r in await store.readings(meter_id, start=ts, end=ts + timedelta(microseconds=1),
                                                    limit=1000) if r.channel in wanted]
            if {r.channel for r in rows} >= wanted or loop.time() >= deadline:
                return rows
            await asyncio.sleep(0.2)
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
