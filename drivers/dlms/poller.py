"""DlmsPoller: polls the DLMS meters of one endpoint on their schedules and emits RawObjects.

One task per meter inside one TaskGroup, as the Modbus poller: the endpoint's link is the only
thing they share, behind its bus lock (drivers/polling/buslock.py), one association per hold.
Each poll opens the link, associates with the meter's own client SAP and security, reads the
clock and the mapped objects, releases, closes. A refused association (wrong password or key) is
that meter's failure: counted in its health, its breaker opens and it backs off; the others go on.
A link that cannot be opened backs off the whole endpoint (gateway/backoff.py). Bytes that are not
DLMS (garbage, bad checksums, truncated APDUs, data of the wrong type) are dead-lettered in hex
with the meter id, and the poll is a failure of kind "frame" - never a crash.

The meter's clock offset (meter time - gateway time at the read) shifts the readings' timestamp:
ts = slot boundary + offset, so VEE's time tolerance (CLOCK_SKEW / FUTURE_TS) judges the meter's
clock as it judges any device timestamp; the offset itself is in the meter's health
(`clock_offset_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.base import DriverStatus, Observed
from drivers.dlms import diag
from drivers.dlms.backfill import Backfill, BackfillPolicy, Since
from drivers.dlms.errors import AccessError, AssociationRefused, FrameError
from drivers.dlms.links import HdlcLink, Link, SerialLine, WrapperLink, serial_opener, tcp_opener
from drivers.dlms.reads import DATA, ObjectRead, ProfileRows, Reader, read_profile
from drivers.dlms.secrets import CounterFile
from drivers.dlms.session import Security, Session
from drivers.dlms.settings import DlmsEndpoint
from drivers.polling.breaker import BreakerPolicy, CircuitBreaker
from drivers.polling.buslock import BusLock
from drivers.polling.health import LatencyWindow, MeterHealth
from drivers.polling.schedule import Schedule, send_offset
from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, DriverError, MeterTimeout, NotFound
from gateway.model import DeadLetter, Event, EventKind, Severity
from gateway.model.samples import PollFailure, RawObjects, Sample

log = logging.getLogger(__name__)
Emit = Callable[[Sample], Awaitable[None]]
PUBLIC_CLIENT = 16


@dataclass(frozen=True, slots=True)
class DlmsTarget:
    """One meter on the endpoint: its addressing, security, what to read and when."""

    meter_id: str
    client_sap: int
    server_logical: int
    server_physical: int | None
    security: Security
    objects: tuple[tuple[int, str], ...]  # (interface class, code)
    interval: float
    align: bool = True
    counter: CounterFile | None = None
    frame_counter: str | None = None
    fixed: frozenset[str] = frozenset()  # codes whose class the configuration states (never guessed)


@dataclass(slots=True)
class _MeterState:
    health: MeterHealth
    breaker: CircuitBreaker
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    reader: Reader = field(default_factory=Reader)
    counter: int = 0
    counter_synced: bool = False
    clock_offset_s: float | None = None
    last_apdu: bytes = b""
    last_association: datetime | None = None  # when the meter last accepted an association (diagnostics)
    associations: int = 0
    missing: set[str] = field(default_factory=set)


class DlmsPoller:
    """Polls `targets` on `endpoint` until cancelled, emitting RawObjects, PollFailure, Event and DeadLetter."""

    def __init__(self, endpoint: DlmsEndpoint, targets: Sequence[DlmsTarget], emit: Emit, *,
                 breaker: BreakerPolicy | None = None, failures_before_lost: int = 3,
                 backoff: Backoff | None = None, clock: Callable[[], datetime] | None = None,
                 monotonic: Callable[[], float] = time.monotonic, backfill: BackfillPolicy | None = None,
                 since: Since | None = None) -> None:
        self.endpoint = endpoint
        self._targets = {t.meter_id: t for t in targets}
        self._emit = emit
        self._clock = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._lost_after = failures_before_lost
        self.backfill = Backfill(backfill, emit, self._clock, since) if backfill else None  # drivers/dlms/backfill.py
        self._bus = BusLock()
        self._backoff = backoff or Backoff(1.0, 300.0)
        self._retry_at = 0.0
        self._link_error: str | None = None
        self.connects = self.requests = self.frames_bad = 0
        self._state = {t.meter_id: _MeterState(MeterHealth(t.meter_id, t.server_logical), CircuitBreaker(breaker))
                       for t in targets}
        for t in targets:
            if t.counter is not None:
                self._state[t.meter_id].counter = t.counter.load()

    # -- the driver contract ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"dlms:{self.endpoint.name}"

    @property
    def target(self) -> str:
        return self.endpoint.name

    def meter_ids(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def status(self, observed: Observed) -> DriverStatus:
        ep = self.endpoint
        rate = round(observed.polls_per_second(ep.name), 3)
        return DriverStatus(label=f"dlms {ep.name}", where=f"{ep.transport} {ep.address}",
                            connected=self._link_error is None, rate=rate, rate_unit="polls/s",
                            errors_by_kind=dict(observed.poll_failures(ep.name)), meters=len(self._targets),
                            detail={"endpoint": ep.name, "transport": ep.transport, "address": ep.address,
                                    "connects": self.connects, "requests": self.requests,
                                    "bad_frames": self.frames_bad, "link_error": self._link_error})

    def meter_health(self, meter_id: str) -> MeterHealth | None:
        st = self._state.get(meter_id)
        if st is None:
            return None
        p50, p90, p99 = st.latency.percentiles(50, 90, 99)
        return replace(st.health, latency_p50_s=p50, latency_p90_s=p90, latency_p99_s=p99,
                       breaker=st.breaker.state.value)

    def health(self) -> dict[str, MeterHealth]:
        return {m: h for m in self._state if (h := self.meter_health(m)) is not None}

    def clock_offset(self, meter_id: str) -> float | None:
        """The meter's clock minus the gateway's at its last read (s); None before one."""
        return self._state[meter_id].clock_offset_s

    def last_apdu(self, meter_id: str) -> bytes:
        return self._state[meter_id].last_apdu

    def meter_detail(self, meter_id: str) -> dict[str, Any] | None:
        """The meter's DLMS state for diagnostics (drivers/dlms/diag.py); None for another's meter."""
        st, t = self._state.get(meter_id), self._targets.get(meter_id)
        if st is None or t is None:
            return None
        return diag.detail(self.meter_health(meter_id), authentication=t.security.authentication,
                           ciphered=t.security.ciphered, last_association=st.last_association,
                           associations=st.associations, last_apdu=st.last_apdu, clock_offset_s=st.clock_offset_s)

    async def read_raw(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """One attribute of one meter, in its own association (diagnostics: drivers/dlms/diag.py)."""
        ask = diag.AttributeRequest.parse(request, self._targets)
        reader = self._state[ask.meter_id].reader
        got: dict[str, Any] = await self._session(self._targets[ask.meter_id],
                                                  lambda s: diag.read_attribute(reader, s, ask))
        return got

    async def run(self) -> None:
        if not self._targets:
            await asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as tg:
            for t in self._targets.values():
                tg.create_task(self._meter_loop(t), name=f"dlms poll {t.meter_id}")

    async def poll_now(self, meter_id: str) -> RawObjects:
        """Read one meter at once (ts = now), past its schedule and breaker; emits nothing."""
        target = self._targets.get(meter_id)
        if target is None:
            raise NotFound("meter", meter_id)
        return await self._read(target, self._clock())

    async def read_profile(self, meter_id: str, code: str, start: datetime, end: datetime) -> ProfileRows:
        """The rows of load profile `code` from `start` to `end` (for the backfill after a gap)."""
        target = self._targets.get(meter_id)
        if target is None:
            raise NotFound("meter", meter_id)
        state = self._state[meter_id]
        rows: ProfileRows = await self._session(target, lambda s: read_profile(state.reader, s, code, start, end))
        return rows

    async def in_session(self, meter_id: str, work: Callable[[Session, Reader], Awaitable[Any]]) -> Any:
        """`work` in one association with the meter, with its reader (the push listener's layout reads)."""
        target = self._targets.get(meter_id)
        if target is None:
            raise NotFound("meter", meter_id)
        state = self._state[meter_id]
        return await self._session(target, lambda s: work(s, state.reader))

    # -- one poll ----------------------------------------------------------------------------------
    async def _read(self, target: DlmsTarget, ts: datetime) -> RawObjects:
        state = self._state[target.meter_id]
        started = self._monotonic()

        async def work(session: Session) -> tuple[list[ObjectRead], float]:
            before = self._clock()
            try:
                meter_time = await state.reader.clock(session)
            except AccessError:  # a meter without a readable clock: its readings keep the slot's time
                offset = 0.0
            else:
                after = self._clock()
                offset = (meter_time.at - (before + (after - before) / 2)).total_seconds()
            values = [await self._object(session, state, target, interface, code)
                      for interface, code in target.objects]
            return [v for v in values if v is not None], offset

        reads, offset = await self._session(target, work)
        state.clock_offset_s = offset
        values = tuple((r.code, r.value, r.unit) for r in reads)
        return self._raw(target, ts + timedelta(seconds=offset), values, self._monotonic() - started)

    def _raw(self, target: DlmsTarget, ts: datetime, values: tuple[Any, ...], latency: float) -> RawObjects:
        state = self._state[target.meter_id]
        state.latency.add(latency)
        state.health.last_latency_s = latency
        return RawObjects(target.meter_id, ts, self._clock(), values, raw=state.last_apdu)

    async def _object(self, session: Session, state: _MeterState, target: DlmsTarget, interface: int,
                      code: str) -> ObjectRead | None:
        """One mapped object; a missing one is dead-lettered once per run and skipped, not the poll."""
        try:
            if code in target.fixed:
                return await state.reader.read(session, interface, code)
            return await state.reader.read_guessed(session, interface, code)
        except AccessError as err:
            if code not in state.missing:
                state.missing.add(code)
                await self._emit(DeadLetter(ts=self._clock(), source="dlms", where=f"{target.meter_id} {code}",
                                            reason="access", detail=str(err), payload="", meter_id=target.meter_id))
            return None

    async def _session(self, target: DlmsTarget, work: Callable[[Session], Awaitable[Any]]) -> Any:
        """Open the link, (sync the invocation counter,) associate, do `work`, release, close."""
        state = self._state[target.meter_id]
        async with self._bus.hold():
            if self._monotonic() < self._retry_at:
                raise ConnectionFailed(target.meter_id, self.endpoint.name,
                                       f"reconnecting in {self._retry_at - self._monotonic():.0f} s: {self._link_error}")
            try:
                if target.security.ciphered and not state.counter_synced and target.frame_counter:
                    await self._sync_counter(target, state)
                link = await self._open(target, target.client_sap)
                try:
                    session = Session(link, target.security, meter_id=target.meter_id, where=self.endpoint.name,
                                      invocation_counter=state.counter)
                    try:
                        await session.associate()
                        state.last_association, state.associations = self._clock(), state.associations + 1
                        result = await work(session)
                        await session.release()
                    finally:
                        state.last_apdu = session.last_raw
                        self.requests += 1
                        if target.security.ciphered:
                            state.counter = session.invocation_counter
                            self._save_counter(target, state.counter)
                finally:
                    await link.close()
            except TimeoutError:
                raise MeterTimeout(target.meter_id, self.endpoint.name,
                                   f"no answer within {self.endpoint.timeout:g} s") from None
            except FrameError as err:
                self.frames_bad += 1
                if err.meter_id is None:  # raised by the link, which knows no meter: name it
                    raise FrameError(target.meter_id, err.where, err.detail, err.raw) from None
                raise
            except OSError as exc:
                raise ConnectionFailed(target.meter_id, self.endpoint.name, f"link lost: {exc}") from None
            return result

    def _save_counter(self, target: DlmsTarget, counter: int) -> None:
        """Keep the counter for a restart; a disk that refuses is logged (the meter's frame counter,
        read at the next start, still says where to go on), never this poll's failure."""
        if target.counter is None:
            return
        try:
            target.counter.save(counter)
        except OSError as exc:
            log.warning("meter %s: invocation counter not saved to %s: %s", target.meter_id, target.counter.path,
                        exc.strerror or exc, extra={"meter_id": target.meter_id})

    async def _sync_counter(self, target: DlmsTarget, state: _MeterState) -> None:
        """Read the meter's frame counter with the public client: start above it and above our file."""
        assert target.frame_counter is not None
        link = await self._open(target, PUBLIC_CLIENT)
        try:
            session = Session(link, Security(), meter_id=target.meter_id, where=self.endpoint.name)
            await session.associate()
            obj = await state.reader.read(session, DATA, target.frame_counter)
            await session.release()
            state.counter = max(state.counter, int(obj.value) if not isinstance(obj.value, str) else 0)
            state.counter_synced = True
        except (AccessError, AssociationRefused, FrameError, ValueError) as err:
            # The meter answered but will not tell: go on from the saved counter. (A link that is
            # down or silent is raised: the poll fails and the next one asks again.)
            log.info("meter %s: frame counter %s not read (%s); using the saved counter %d", target.meter_id,
                     target.frame_counter, err, state.counter, extra={"meter_id": target.meter_id})
            state.counter_synced = True
        finally:
            await link.close()

    async def _open(self, target: DlmsTarget, client: int) -> Link:
        ep = self.endpoint
        link: Link
        if ep.transport == "wrapper":
            link = WrapperLink(tcp_opener(ep.host or "", ep.port), ep.name, client, target.server_logical, ep.timeout)
        elif ep.transport == "hdlc_tcp":
            link = HdlcLink(tcp_opener(ep.host or "", ep.port), ep.name, client, target.server_logical,
                            target.server_physical, ep.timeout)
        else:
            link = HdlcLink(serial_opener(SerialLine(ep.device or "", ep.baudrate)), ep.name, client,
                            target.server_logical, target.server_physical, ep.timeout)
        try:
            await link.open()
        except (OSError, TimeoutError) as exc:
            await link.close()
            self._link_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._retry_at = self._monotonic() + self._backoff.next()
            raise ConnectionFailed(target.meter_id, ep.name, f"cannot open {ep.transport} {ep.address}: "
                                   f"{self._link_error}") from None
        self.connects += 1
        self._link_error = None
        self._backoff.reset()
        return link

    # -- the schedule ------------------------------------------------------------------------------
    async def _meter_loop(self, target: DlmsTarget) -> None:
        schedule = Schedule(target.interval, align=target.align,
                            offset=send_offset(target.meter_id, target.interval) if target.interval else 0.0)
        state = self._state[target.meter_id]
        if self.backfill:
            await self.backfill.start(target.meter_id)
        while True:
            now = self._clock().timestamp()
            slot = schedule.next(now)
            delay = slot.send_at - now
            await asyncio.sleep(max(0.0, delay))
            if state.breaker.allow(self._monotonic()):
                ts = (datetime.fromtimestamp(slot.due, UTC) if target.align and target.interval else self._clock())
                await self._poll_once(target, state, ts)
            else:
                state.health.breaker_skips += 1
                if not target.interval:
                    await asyncio.sleep(max(0.0, state.breaker.open_until - self._monotonic()))
            state.health.skipped += schedule.finished(slot, self._clock().timestamp())

    async def _poll_once(self, target: DlmsTarget, state: _MeterState, ts: datetime) -> None:
        h = state.health
        h.last_attempt = self._clock()
        h.polls += 1
        try:
            raw = await self._read(target, ts)
        except DriverError as err:
            await self._failed(target, state, ts, err)
            return
        except Exception as exc:  # a case no typed error covers: this meter's failure, not the fleet's
            log.debug("meter %s: unexpected %s", target.meter_id, type(exc).__name__, exc_info=True,
                      extra={"meter_id": target.meter_id})
            await self._failed(target, state, ts, FrameError(target.meter_id, self.endpoint.name,
                                                             f"unexpected {type(exc).__name__}: {exc}",
                                                             state.last_apdu))
            return
        restored, failed_before = h.comm_lost, h.consecutive_failures
        state.breaker.success()
        h.last_success, h.consecutive_failures, h.comm_lost = raw.received_at, 0, False
        if self.backfill:  # the gap's intervals from the meter's memory first, so VEE finds them real
            await self.backfill.before(self, raw)
        await self._emit(raw)
        if restored:
            await self._emit(Event(self._clock(), target.meter_id, EventKind.COMM_RESTORED, Severity.INFO,
                                   f"answered again after {failed_before} failed polls"))

    async def _failed(self, target: DlmsTarget, state: _MeterState, ts: datetime, err: DriverError) -> None:
        h = state.health
        h.failures += 1
        h.consecutive_failures += 1
        h.last_error, h.last_error_kind = str(err), err.kind
        lost = not h.comm_lost and h.consecutive_failures >= self._lost_after
        if h.consecutive_failures == 1 or lost:
            log.warning("meter %s: poll failed: %s", target.meter_id, err, extra={"meter_id": target.meter_id})
        state.breaker.failure(self._monotonic())
        if isinstance(err, FrameError):
            await self._emit(DeadLetter(ts=self._clock(), source="dlms", where=f"{target.meter_id} {self.endpoint.name}",
                                        reason="frame", detail=err.detail, payload=err.raw.hex(),
                                        meter_id=target.meter_id))
        await self._emit(PollFailure(target.meter_id, ts, err))
        if lost:
            h.comm_lost = True
            await self._emit(Event(self._clock(), target.meter_id, EventKind.COMM_LOST, Severity.WARNING, str(err)))


__all__ = ["PUBLIC_CLIENT", "DlmsPoller", "DlmsTarget"]
