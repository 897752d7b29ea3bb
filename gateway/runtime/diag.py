"""The technicians' view of a running gateway: readiness, status, fleet, one meter, poll now.

`Gateway` delegates the diagnostics part of `api.ports.GatewayPort` here, so the composition
root stays about building and running stages. Everything answers from memory first; the store
is asked with a short deadline and, when it is down, the answer says so instead of waiting.
Drivers are read through their contract (status, meter health, capabilities): no protocol is
named here, each driver's spec says how its links show.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from drivers.base import MeterDetail, MeterFacts, MeterHealth, PollNow, RawRead, Subscriber
from gateway import __version__
from gateway.config.schema import GatewayConfig
from gateway.errors import GatewayError, InvalidRequest, NotFound, SinkError
from gateway.model import BalanceUpdate, Batch, Channel, DeadLetter, Event, Reading
from gateway.model.health import MeterDiagnostics, MeterSummary, PollResult, RawBlock, RecentPayload
from gateway.model.samples import RawObjects, RawRegisters
from gateway.normalise.normaliser import Normaliser
from gateway.runtime.health import HealthBook, WatchedMeter, merge_deadletters, merge_events
from gateway.runtime.view import GatewayView
from storage.base import Store

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The status page charts a meter's last this many polls, at most CHART_LIMIT points.
CHART_POLLS = 120
CHART_LIMIT = 1000
#: Seconds diagnostics answer from memory alone after the store failed to answer one of them.
STORE_QUIET = 5.0


def watched_meters(config: GatewayConfig, facts: Mapping[str, MeterFacts]) -> list[WatchedMeter]:
    """Every configured meter as diagnostics know it (inactive ones included: they show as such)."""
    out = []
    for m in config.meters:
        f = facts[m.meter_id]
        out.append(WatchedMeter(m.meter_id, m.protocol, f.where, endpoint=f.endpoint, unit=f.unit,
                                active=m.status.value == "active", interval=f.interval,
                                balances=f.balance is not None))
    return out


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


class Diagnostics:
    """Diagnostics of one Gateway; see the module docstring.

    `store_timeout`: seconds a diagnostics request waits for the store before answering from
    memory. `ping_every`: /readyz pings the store at most this often (probes may come fast).
    """

    def __init__(self, gateway: GatewayView, book: HealthBook, *, store_timeout: float = 2.0,
                 ping_every: float = 2.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.gw = gateway
        self.book = book
        self.store_timeout = store_timeout
        self.ping_every = ping_every
        self._monotonic = monotonic
        self._ping_lock = asyncio.Lock()
        self._last_ping: tuple[float, str | None] | None = None  # (when, error or None)
        self._store_quiet_until = 0.0  # monotonic time before which the store is not asked again

    # -- readiness -------------------------------------------------------------------------
    async def _ping(self, *, doubt: bool = False) -> str | None:
        """None if the store answered a ping, else why not (cached for `ping_every` s; a cached
        success is not trusted when `doubt`, i.e. when the forwarder just failed to write)."""
        async with self._ping_lock:
            now = self._monotonic()
            last = self._last_ping
            if last is not None and now - last[0] < self.ping_every and not (doubt and last[1] is None):
                return last[1]
            store = self.gw.store
            error: str | None
            if store is None:
                error = "not opened yet"
            else:
                try:
                    await asyncio.wait_for(store.ping(), self.store_timeout)
                    error = None
                except TimeoutError:
                    error = f"no answer to a ping within {self.store_timeout:g} s"
                except (GatewayError, OSError) as exc:
                    error = str(exc)
            self._last_ping = (self._monotonic(), error)
            return error

    async def readiness(self) -> dict[str, Any]:
        """Checks: sink (pinged, and the forwarder writing), migrations, spool, broker (if used)."""
        gw = self.gw
        checks: dict[str, dict[str, Any]] = {}
        fw = gw.forwarder.state if gw.forwarder is not None else None
        ping_error = await self._ping(doubt=fw is not None and not fw.sink_up)
        if ping_error is not None:
            sink = {"ok": False, "detail": f"unreachable: {ping_error}"}
        elif not gw.store_ready.is_set():
            sink = {"ok": False, "detail": "reachable; connecting and migrating"}
        elif fw is not None and not fw.sink_up:
            sink = {"ok": False, "detail": f"reachable again; forwarding resumes after the back-off "
                                           f"(last error: {fw.last_error})"}
        else:
            sink = {"ok": True, "detail": "reachable"}
        checks["sink"] = sink
        checks["migrations"] = {"ok": gw.migrated, "detail": "applied" if gw.migrated else "pending"}
        if gw.spool is not None:
            st = gw.spool.stats()
            age = f", oldest {st.oldest_age_s:.0f} s old" if st.oldest_age_s else ""
            checks["spool"] = {"ok": st.fill < gw.spool.high_water,
                               "detail": f"{st.items} items, {st.fill:.1%} of limit "
                                         f"(warning at {gw.spool.high_water:.0%}){age}"}
            if st.blocked is not None:
                since = _iso(datetime.fromtimestamp(st.blocked_since or 0, UTC))
                checks["spool"] = {"ok": False, "detail": f"cannot write: {st.blocked} since {since}; intake paused "
                                   "(MQTT messages stay unacknowledged at the broker, polls wait), retrying; "
                                   f"{st.items} items waiting for the store"}
        for driver in gw.drivers:  # the links that are readiness checks ("broker")
            link = driver.status(self.book)
            if link.check is not None:
                checks[link.check] = {"ok": link.connected, "detail": "connected" if link.connected else "disconnected"}
        failed = [name for name, c in checks.items() if not c["ok"]]
        return {"ready": not failed, "failed": failed, "checks": checks,
                "storage_mode": gw.store.mode if gw.store is not None else "unknown",
                "storage_retention": getattr(gw.store, "retention_mode", "off")}

    # -- status ----------------------------------------------------------------------------
    def driver_health(self) -> dict[str, MeterHealth]:
        """Every polled meter's driver health, by meter id."""
        return {m: h for d in self.gw.drivers for m in d.meter_ids() if (h := d.meter_health(m)) is not None}

    def status(self, *, per_meter: bool = True) -> dict[str, Any]:
        """Gateway status for technicians (see api.schemas.diag.GatewayStatusOut for the fields).
        `per_meter` adds each protocol's per-meter detail under its name (large for a big fleet)."""
        gw = self.gw
        health = self.driver_health()
        spool = gw.spool.stats() if gw.spool is not None else None
        fw = gw.forwarder.state if gw.forwarder is not None else None
        started = datetime.fromtimestamp(gw.started_at, UTC)
        drivers: dict[str, Any] = {}
        details: dict[str, Any] = {}
        for protocol, spec in gw.registry.items():
            mine = gw.drivers_of(protocol)
            links = [d.status(self.book).as_dict() for d in mine]
            drivers[protocol] = (links[0] if links else None) if spec.one_link else links
            details[protocol] = spec.details(mine) if per_meter else None
        return {
            **details,
            "gateway_id": gw.config.gateway.id,
            "version": __version__,
            "started_at": started.isoformat(),
            "uptime_s": round(time.time() - gw.started_at, 1),
            "config_file": str(gw.config_path) if gw.config_path else None,
            "config_hash": gw.config_hash,
            "storage_mode": gw.store.mode if gw.store is not None else None,
            "meters": {state.value: n for state, n in self.book.counts_by_state(health).items()},
            "drivers": drivers,
            "spool": None if spool is None or gw.spool is None else {
                "path": str(gw.spool.path), "rows": spool.rows, "items": spool.items, "bytes": spool.bytes,
                "max_bytes": spool.max_bytes, "fill": round(spool.fill, 4), "high_water": gw.spool.high_water,
                "oldest_age_s": spool.oldest_age_s, "held": spool.held, "full": spool.full,
                "blocked": spool.blocked, "write_failures": spool.write_failures,
                "blocked_since": None if spool.blocked_since is None else _iso(
                    datetime.fromtimestamp(spool.blocked_since, UTC))},
            "sink": None if fw is None else {
                "up": gw.store_ready.is_set() and fw.sink_up, "connected": gw.store_ready.is_set(),
                "last_error": fw.last_error, "last_error_at": _iso(fw.last_error_at),
                "last_write_at": _iso(fw.last_write_at), "rows": fw.rows, "batches": fw.batches,
                "retries": fw.retries, "deadlettered": fw.deadlettered, "last_batch_s": fw.last_batch_s},
            "pipeline": None if gw.pipeline is None else {
                "queue": gw.pipeline.queue.qsize(), "queue_limit": gw.pipeline.queue.maxsize,
                "readings": gw.pipeline.counters.readings, "balances": gw.pipeline.counters.balances,
                "events": gw.pipeline.counters.events, "deadletters": gw.pipeline.counters.deadletters},
        }

    # -- meters ----------------------------------------------------------------------------
    def fleet(self) -> list[MeterSummary]:
        return self.book.fleet(self.driver_health())

    def meter_summary(self, meter_id: str) -> MeterSummary:
        """NotFound for a meter that is not in the configuration."""
        if self.book.watched(meter_id) is None:
            raise NotFound("meter", meter_id)
        return self.book.summary(meter_id, self.driver_health().get(meter_id))

    def recent_payloads(self, meter_id: str) -> list[RecentPayload]:
        """The last messages a meter pushed, newest last (empty for a polled meter)."""
        if self.book.watched(meter_id) is None:
            raise NotFound("meter", meter_id)
        driver = self.gw.driver_for(meter_id)
        if not isinstance(driver, Subscriber):
            return []
        return [RecentPayload(p["topic"], p["payload"], datetime.fromisoformat(p["received_at"]))
                for p in driver.recent(meter_id)]

    async def meter(self, meter_id: str) -> MeterDiagnostics:
        watched = self.book.watched(meter_id)
        if watched is None:
            raise NotFound("meter", meter_id)
        stored, reachable = await self._from_store(lambda s: s.events(meter_id=meter_id, limit=50))
        found = self.book.diagnostics(meter_id, self.driver_health().get(meter_id),
                                      payloads=self.recent_payloads(meter_id), stored_events=stored or (),
                                      store_reachable=reachable)
        driver = self.gw.driver_for(meter_id)
        detail = driver.meter_detail(meter_id) if isinstance(driver, MeterDetail) else None
        return replace(found, protocol_detail=dict(detail)) if detail is not None else found

    async def recent_values(self, meter_id: str, channel: Channel) -> tuple[list[Reading], bool]:
        """One channel of a meter over its last CHART_POLLS polls (at least 10 minutes), oldest first:
        stored readings and the ones not yet forwarded; and whether the store answered."""
        watched = self.book.watched(meter_id)
        if watched is None:
            raise NotFound("meter", meter_id)
        now = datetime.now(UTC)
        start = now - timedelta(seconds=max(600.0, CHART_POLLS * (watched.interval or 60.0)))
        stored, reachable = await self._from_store(lambda s: s.readings(
            meter_id, start=start, end=now + timedelta(seconds=1), channel=channel, limit=CHART_LIMIT))
        by_ts = {r.ts: r for r in stored or ()}
        for r in self.book.readings_of(meter_id, channel.value):  # spooled, maybe not stored yet
            by_ts.setdefault(r.ts, r)
        return [by_ts[ts] for ts in sorted(by_ts)][-CHART_LIMIT:], reachable

    async def recent_balances(self, meter_id: str) -> tuple[list[BalanceUpdate], bool]:
        """A PAYG meter's balance updates of the last two days, oldest first; whether the store answered."""
        if self.book.watched(meter_id) is None:
            raise NotFound("meter", meter_id)
        now = datetime.now(UTC)
        stored, reachable = await self._from_store(lambda s: s.balances(
            meter_id, start=now - timedelta(days=2), end=now + timedelta(seconds=1), limit=CHART_LIMIT))
        by_ts = {b.ts: b for b in stored or ()}
        for b in self.book.balances_of(meter_id):
            by_ts.setdefault(b.ts, b)
        return [by_ts[ts] for ts in sorted(by_ts)][-CHART_LIMIT:], reachable

    async def events(self, *, meter_id: str | None = None, limit: int = 20) -> tuple[list[Event], bool]:
        """Latest events (store and memory), newest first; and whether the store answered."""
        stored, reachable = await self._from_store(lambda s: s.events(meter_id=meter_id, limit=limit))
        return merge_events(stored or (), self.book.recent_events(meter_id, limit))[:limit], reachable

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> tuple[list[DeadLetter], bool]:
        """Dead letters (store and memory), newest first; and whether the store answered."""
        stored, reachable = await self._from_store(
            lambda s: s.deadletters(meter_id=meter_id, reason=reason, limit=limit))
        memory = self.book.recent_deadletters(meter_id=meter_id, reason=reason, limit=limit)
        return merge_deadletters(stored or (), memory, limit=limit), reachable

    async def _from_store(self, call: Callable[[Store], Awaitable[T]]) -> tuple[T | None, bool]:
        """(result, True), or (None, False) at once while the store is known to be down: a page
        that asks several things must not wait `store_timeout` for each of them."""
        store = self.gw.store
        fw = self.gw.forwarder
        if store is None or not self.gw.store_ready.is_set() or (fw is not None and not fw.state.sink_up):
            return None, False
        if self._monotonic() < self._store_quiet_until:
            return None, False
        try:
            return await asyncio.wait_for(call(store), self.store_timeout), True
        except (TimeoutError, SinkError, OSError) as exc:
            log.debug("diagnostics answer from memory: the store did not answer (%s)", exc)
            self._store_quiet_until = self._monotonic() + STORE_QUIET
            return None, False

    # -- technicians' reads ----------------------------------------------------------------
    async def poll_now(self, meter_id: str) -> PollResult:
        """Read a meter at once and decode it like the pipeline would; nothing is stored.

        NotFound (not configured), InvalidRequest (a meter that pushes, or inactive), DriverError."""
        watched = self.book.watched(meter_id)
        if watched is None:
            raise NotFound("meter", meter_id)
        driver = self.gw.driver_for(meter_id)
        if not isinstance(driver, PollNow):
            if watched.endpoint is None:
                kind = f"PAYG, {watched.protocol}" if watched.balances else watched.protocol
                msg = f"meter {meter_id} ({kind}) pushes its data: it cannot be polled; see its recent payloads"
                raise InvalidRequest(msg)
            msg = (f"meter {meter_id} is not polled (status inactive or maintenance); read its registers "
                   f"with a raw read on endpoint {watched.endpoint} unit {watched.unit}")
            raise InvalidRequest(msg)
        raw = await driver.poll_now(meter_id)
        batch = preview(self.gw, meter_id, watched.protocol, raw)
        registers = raw if isinstance(raw, RawRegisters) else None
        return PollResult(meter_id=meter_id, endpoint=watched.endpoint or driver.target, unit=watched.unit or 0,
                          received_at=raw.received_at,
                          latency_s=registers.latency_s if registers is not None else 0.0,
                          blocks=tuple(RawBlock(b.function, b.address, b.words) for b in registers.blocks)
                          if registers is not None else (),
                          readings=tuple(batch.readings), deadletters=tuple(batch.deadletters))

    async def read_raw(self, target: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """A raw read on the link technicians call `target` (a Modbus endpoint).

        NotFound (no such link), InvalidRequest (its meters are all inactive, so no driver holds
        it, or the request is out of bounds), DriverError."""
        driver = next((d for d in self.gw.drivers if d.target and d.target == target), None)
        if driver is None:
            if any(m.endpoint == target for m in self.book.meters):
                msg = f"endpoint {target} has no active meters, so the gateway holds no connection to it"
                raise InvalidRequest(msg)
            raise NotFound("endpoint", target)
        if not isinstance(driver, RawRead):
            raise NotFound("raw read on endpoint", target)  # its driver reads no raw data
        return await driver.read_raw(request)


def preview(gw: GatewayView, meter_id: str, protocol: str, raw: RawRegisters | RawObjects) -> Batch:
    """What the pipeline would make of one poll of a meter, by a throw-away normaliser (the pipeline's
    remembers tamper episodes, a preview must not): its profile, or its object map read with its
    protocol's source (M-Bus, DLMS ...)."""
    facts = gw.facts[meter_id]
    objects = ({meter_id: (facts.objects, gw.registry[protocol].source)}
               if facts.objects is not None and protocol in gw.registry else {})
    profiles = {meter_id: facts.profile} if facts.profile is not None else {}
    return Normaliser(profiles, {}, objects=objects).sample(raw)


__all__ = ["Diagnostics", "preview", "watched_meters"]
