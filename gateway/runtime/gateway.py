"""The composition root: builds every stage, connects them, owns every task.

Start order: spool, store (connected in the background, so a database that is down at start only delays
forwarding; the meters' installation floors are read from it before any driver runs), pipeline, forwarder, drivers,
API. Stop order (SIGTERM): drivers first, then the pipeline drains its queue into the spool, then the forwarder
drains the spool into the store until the deadline, then the API stops.

The drivers come from a registry (`drivers.registry.DRIVERS` unless told otherwise): each spec builds its drivers
from its own section, and says what its meters mean to the stages. Nothing here names a protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import generate_latest

from drivers.base import BuildContext, Driver, DriverSpec, MeterFacts, MeterHealth, Poller, Subscriber
from drivers.registry import DRIVERS
from gateway.backoff import Backoff
from gateway.config.schema import GatewayConfig
from gateway.config.sections import bindings
from gateway.errors import SinkUnavailable
from gateway.model import (
    BalanceUpdate,
    Batch,
    Channel,
    Command,
    CommandKind,
    DeadLetter,
    Event,
    EventKind,
    Reading,
    Submission,
)
from gateway.model.health import MeterDiagnostics, MeterSummary, PollResult, RecentPayload
from gateway.model.profiles import DeviceProfile, Function
from gateway.runtime.apiproc import configured_app, serve, server_for
from gateway.runtime.commands import CommandDesk
from gateway.runtime.control import ControlServer
from gateway.runtime.core import ProcessBook, hello
from gateway.runtime.diag import Diagnostics, watched_meters
from gateway.runtime.health import HealthBook
from gateway.runtime.installed import InstallationFloors
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.plan import (
    balance_meters,
    build_normaliser,
    build_validator,
    config_meters,
    meter_facts,
    meters_from_config,
    payg_checker,
    payload_formats,
)
from gateway.runtime.port import LocalPort
from gateway.runtime.reads import ReadDesk
from gateway.runtime.store import key_mirror, maintain, newest_reading, open_configured_store, retention_of
from gateway.runtime.supervise import supervise
from gateway.runtime.systemd import Notifier, PipelineProgress, watchdog
from gateway.validate.validator import Validator
from storage.base import Store
from storage.files import private_dir
from storage.spool import Spool, SpoolStats
from storage.spool.forwarder import Forwarder

log = logging.getLogger(__name__)


class Gateway:
    """One gateway process: `await Gateway(config, profiles).run(stop)`.

    `drivers` is the registry of driver specs by protocol; `config` must have been validated for
    the same protocols (gateway.runtime.config for this build's, gateway.config.load with others).
    `control`: serve the core's control socket there instead of the API (the API runs in a process
    of its own and asks the core through it: `meter-gateway run`, gateway.runtime.processes).
    """

    def __init__(self, config: GatewayConfig, profiles: dict[str, DeviceProfile], *,
                 config_path: Path | None = None, store: Store | None = None,
                 drivers: Mapping[str, DriverSpec] = DRIVERS, control: Path | None = None) -> None:
        if list(type(config).specs) != list(drivers):
            msg = (f"the configuration was validated for the drivers {', '.join(type(config).specs) or 'none'}, "
                   f"the gateway runs {', '.join(drivers) or 'none'}")
            raise ValueError(msg)
        self.config = config
        self.profiles = profiles
        self.registry = drivers
        self.config_path = config_path
        self.control = control
        self.config_hash = hashlib.sha256(config_path.read_bytes()).hexdigest()[:16] if config_path and config_path.exists() else None
        self._given_store = store
        self.store: Store | None = store
        self.store_ready = asyncio.Event()
        self.migrated = False
        self.started_at = time.time()
        #: Every configured meter's facts, as its driver's spec states them.
        self.facts: dict[str, MeterFacts] = meter_facts(config, profiles, drivers)
        self.drivers: list[Driver] = []
        self._by_protocol: dict[str, list[Driver]] = {}
        self._by_meter: dict[str, Driver] = {}
        self.pipeline: Pipeline | None = None
        self.forwarder: Forwarder | None = None
        self.spool: Spool | None = None
        self.api_server: uvicorn.Server | None = None
        self.started = asyncio.Event()
        self.api_url: str | None = None
        self.metrics = GatewayMetrics()
        #: What technicians see per meter; fed by the pipeline after each spool commit.
        self.health = HealthBook(watched_meters(config, self.facts), silent_after=config.diag.silent_after,
                                 recent_readings=config.diag.recent_readings)
        self.diag = Diagnostics(self, self.health)
        self.payg_checker = payg_checker(config, drivers)
        self.commands = CommandDesk(self, self.payg_checker.command_replied)
        self.reads = ReadDesk.configured(self, config.special_reads)
        self.special_read = self.reads.request  # the API's port (api.ports.GatewayPort)

    # -- the drivers -------------------------------------------------------------------------------
    def _build_drivers(self) -> None:
        """Each spec's drivers, from its own section and its meters (the pipeline is their sink)."""
        assert self.pipeline is not None
        meters = bindings(self.config)
        ports, newest = self.commands.ports(), partial(newest_reading, self.store, self.store_ready)
        for protocol, spec in self.registry.items():
            ctx = BuildContext(settings=self.config.section(protocol), profiles=self.profiles,
                               meters=[b for b in meters if b.protocol == protocol], emit=self.pipeline.emit,
                               gateway_id=self.config.gateway.id, commands=ports, last_reading=newest)
            built = list(spec.build(ctx))
            self._by_protocol[protocol] = built
            self.drivers += built
        self._by_meter = {m: d for d in self.drivers for m in d.meter_ids()}

    def drivers_of(self, protocol: str) -> Sequence[Driver]:
        return self._by_protocol.get(protocol, [])

    def driver_for(self, meter_id: str) -> Driver | None:
        return self._by_meter.get(meter_id)

    @property
    def pollers(self) -> dict[str, Poller]:
        """The drivers that poll, by their link's name (kept for one release, for old callers)."""
        return {d.target: d for d in self.drivers if isinstance(d, Poller)}

    @property
    def subscriber(self) -> Subscriber | None:
        """The driver that subscribes to a broker, if one runs (kept for one release, for old callers)."""
        return next((d for d in self.drivers if isinstance(d, Subscriber)), None)

    # -- PAYG commands (the API calls these; see runtime/commands.py) ------------------------------
    async def send_command(self, meter_id: str, kind: CommandKind | str, amount: Decimal | None = None,
                           reference: str | None = None) -> Command:
        """`submit_command`, for callers that need only the command."""
        return (await self.submit_command(meter_id, kind, amount, reference)).command

    async def submit_command(self, meter_id: str, kind: CommandKind | str, amount: Decimal | None = None, reference:
                             str | None = None, idempotency_key: str | None = None, token: str | None = None) -> Submission:
        """Publish a PAYG command once per key and track it: see `CommandDesk.submit`."""
        return await self.commands.submit(meter_id, kind, amount, reference, idempotency_key, token)

    async def get_command(self, correlation_id: str) -> Command:
        """A command's latest status: the tracker's if it holds it, else the store's. NotFound."""
        return await self.commands.get(correlation_id)

    def commands_available(self) -> bool:
        """Whether this gateway can send PAYG commands (a driver sends them, PAYG meters configured)."""
        return self.commands.available()

    def poll_intervals(self) -> dict[str, float]:
        """Seconds between polls of each configured polled meter (the API's silent-meter rule)."""
        return {m: f.interval for m, f in self.facts.items() if f.interval is not None}

    # -- run ---------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down in order within the deadline."""
        cfg = self.config
        validator = build_validator(cfg, self.profiles, self.facts, self.registry)
        normaliser = build_normaliser(cfg, self.facts, self.registry)
        floors = InstallationFloors(normaliser, self.facts, cfg.plausibility.installed_refresh)

        # Readings, balances, keys: nobody else on the box reads them (the files in it are 0600).
        private_dir(cfg.gateway.data_dir, narrow_existing=True)
        async with contextlib.AsyncExitStack() as stack:
            self.spool = await stack.enter_async_context(Spool(
                cfg.data_path(cfg.spool.path), max_bytes=cfg.spool.max_bytes, on_high_water=self._spool_high,
                on_event=self._spool_event))
            if self.store is None:
                self.store = await open_configured_store(cfg)
                stack.push_async_callback(self.store.close)
            self.pipeline = Pipeline(normaliser, validator, self.spool, queue_size=cfg.gateway.queue_size,
                                     on_batch=self._observed, payg=self.payg_checker, inactive=cfg.inactive_meters())
            # Before any driver runs: what is spooled but not yet stored is already accepted, so a
            # re-delivered message must not raise its PAYG events again.
            await self._seed_payg_from_spool()
            self.forwarder = Forwarder(self.spool, self.store, batch_items=cfg.spool.batch_size,
                                       linger=cfg.spool.linger)
            self.forwarder.state.on_write.append(lambda result, seconds: self.metrics.observe_sink(
                result.readings_inserted + result.balances_inserted + result.events_inserted
                + result.deadletters_inserted, seconds))
            self.metrics.attach(self)
            self._build_drivers()
            async with asyncio.TaskGroup() as tg:
                background = [tg.create_task(self._keep_store(validator, floors), name="store-keeper"),
                              tg.create_task(maintain(self.store, cfg.storage, self.store_ready), name="maintenance"),
                              tg.create_task(self.spool.watch(cfg.spool.check_interval), name="spool-watch"),
                              tg.create_task(floors.run(self.store, self.store_ready), name="installation-floors"),
                              tg.create_task(self.reads.run(), name="special-reads")]
                pipeline_task = tg.create_task(self.pipeline.run(), name="pipeline")
                forwarder_task = tg.create_task(self._forward(), name="forwarder")
                drivers_task = tg.create_task(self._run_drivers(), name="drivers")
                control = ControlServer(self.control, self._control_calls()) if self.control else None
                if control is not None:
                    await control.start()
                    stack.push_async_callback(control.close)
                serve_api = cfg.api.enabled and control is None
                api_task = tg.create_task(self._serve_api(), name="api") if serve_api else None
                if api_task is None:
                    self.started.set()
                notifier = Notifier()
                progress = PipelineProgress(self.pipeline.queue.qsize, lambda: self.pipeline.counters.batches
                                            if self.pipeline else 0)
                watchdog_task = tg.create_task(watchdog(notifier, progress), name="systemd-watchdog")
                await self.started.wait()
                notifier.notify("READY=1")
                await stop.wait()
                notifier.notify("STOPPING=1")
                watchdog_task.cancel()
                log.info("stopping: drivers first, then draining the pipeline and the spool")
                deadline = time.monotonic() + cfg.gateway.shutdown_deadline
                drivers_task.cancel()
                await asyncio.wait([drivers_task])
                # Bounded: while the spool cannot write (a full disk) the pipeline takes nothing from
                # its full queue, and the closing mark would wait for room for ever.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.pipeline.close(), timeout=max(0.1, deadline - time.monotonic()))
                await asyncio.wait([pipeline_task], timeout=max(0.1, deadline - time.monotonic()))
                pipeline_task.cancel()
                forwarder_task.cancel()
                await asyncio.wait([forwarder_task])
                if self.store_ready.is_set():
                    drained = await self.forwarder.drain(deadline)
                    if not drained:
                        log.warning("shutdown deadline reached with %d batches still spooled; they are kept on disk "
                                    "and forwarded at the next start", self.spool.stats().rows)
                for task in background:
                    task.cancel()
                if self.api_server is not None:
                    self.api_server.should_exit = True
        log.info("stopped")

    async def _keep_store(self, validator: Validator, floors: InstallationFloors) -> None:
        """Connect and migrate the store, retrying while it is down; then seed VEE history and the floors."""
        assert self.store is not None
        backoff = Backoff(0.5, 15.0)
        while True:
            try:
                await self.store.migrate()
                clashes = await self.store.sync_meters(config_meters(self.config, self.registry),
                                                       at=datetime.now(UTC))
                index = {m.meter_id: i for i, m in enumerate(self.config.meters)}
                for clash in clashes:
                    log.warning("config meters[%s].device_number: %s; until one of them changes, the configured "
                                "meter keeps the device number the store had for it (a new meter: none)",
                                index.get(clash.meter_id or "", "?"), clash)
                history = await self.store.last_cumulative()
                # VEE windows (spike statistics, flat runs, profiles, regression episodes) from
                # stored history, so the first reading after a restart is checked against it.
                since = datetime.now(UTC) - timedelta(hours=self.config.vee.seed_hours)
                vee_history = await self.store.cumulative_history(since=since) if self.config.vee.seed_hours else []
                inspections = await self.store.events(kind=EventKind.INSPECTION_RECOMMENDED, limit=10_000)
                balances = [await self.store.latest_balance(m) for m in balance_meters(self.facts)]
                break
            except (SinkUnavailable, OSError) as exc:
                log.warning("store not reachable yet (%s); readings are kept in the spool meanwhile", exc)
                await asyncio.sleep(backoff.next())
        validator.seed_history(vee_history)
        validator.seed((h.meter_id, h.channel, h.ts, h.value) for h in history)
        validator.seed_inspections(inspections)
        self.payg_checker.seed(balances)
        await self.commands.restore()
        await floors.refresh(self.store)
        self.migrated = True
        log.info("store ready: %s", self.store.mode)
        self.store_ready.set()

    async def _seed_payg_from_spool(self) -> None:
        assert self.spool is not None
        # peek returns the oldest batches (bounded); enough for the usual few after a crash.
        chunk = await self.spool.peek(50_000)
        seeded = self.payg_checker.seed(b for _, batch in chunk for b in batch.balances)
        if seeded:
            log.info("PAYG checker: %d balance updates from the spool seeded", seeded)

    async def _forward(self) -> None:
        await self.store_ready.wait()
        assert self.forwarder is not None
        await self.forwarder.run()

    async def _run_drivers(self) -> None:
        # Give VEE its history first (a store that is down only delays the first polls a little).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.store_ready.wait(), timeout=self.config.vee.seed_wait)
        async with asyncio.TaskGroup() as tg:
            for driver in self.drivers:
                tg.create_task(supervise(driver.name, driver.run), name=driver.name)

    async def _serve_api(self) -> None:
        assert self.store is not None
        cfg = self.config
        # Give the store a moment to migrate so the first requests find the tables; if it
        # is down, serve anyway: health answers, and data requests say 503 until it returns.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.store_ready.wait(), timeout=5.0)
        self.api_server = server_for(configured_app(cfg, self.store, LocalPort(self)), cfg)
        await serve(self.api_server, self._api_started)

    def _api_started(self, url: str | None) -> None:
        self.api_url = url
        self.started.set()

    def _control_calls(self) -> dict[str, Callable[..., Any]]:
        """What the core's control socket serves: the API's port (api.ports.GatewayPort) and the
        supervisor's report of the processes it restarted."""
        book = ProcessBook(self.metrics, self.health, lambda: self.spool)
        return {
            "hello": partial(hello, self.store_ready, self.poll_intervals, self.commands_available),
            "readiness": self.readiness, "metrics_text": self.metrics_text, "status": self.status, "fleet": self.fleet,
            "meter_summary": self.meter_summary, "meter_diagnostics": self.meter_diagnostics,
            "recent_payloads": self.recent_payloads, "recent_values": self.recent_values,
            "recent_balances": self.recent_balances, "recent_events": self.recent_events,
            "deadletters": self.deadletters, "poll_now": self.poll_now, "read_raw": self.read_raw,
            "submit_command": self.submit_command, "get_command": self.get_command, "processes": book.report,
            "special_read": self.reads.request}

    # -- technicians' reads (the diagnostics API calls these; see runtime/diag.py) ------------------
    async def poll_now(self, meter_id: str) -> PollResult:
        """Read a meter at once, past its schedule and breaker, and decode it (not stored).
        NotFound, InvalidRequest (a meter that pushes, or inactive), DriverError."""
        return await self.diag.poll_now(meter_id)

    async def read_raw(self, target: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """A raw read on a link (a Modbus endpoint: {"unit", "function", "address", "count"} ->
        {"words"}). NotFound (no such link, or its driver has no raw reads), InvalidRequest, DriverError."""
        return await self.diag.read_raw(target, request)

    async def read_registers(self, endpoint: str, unit: int, function: Function, address: int,
                             count: int) -> tuple[int, ...]:
        """`read_raw` of registers (FC 03/04, at most 125) on an endpoint; kept for one release."""
        got = await self.read_raw(endpoint, {"unit": unit, "function": function, "address": address, "count": count})
        return tuple(got["words"])

    def _spool_high(self, stats: SpoolStats) -> None:
        # The spool itself stores the SPOOL_HIGH event, in the commit that crossed the line
        # (storage/spool/spool.py): queueing another one here would store it twice.
        log.warning("spool at %.0f%% of %d bytes (%d items waiting)", stats.fill * 100, stats.max_bytes, stats.items)

    def _spool_event(self, event: Event) -> None:
        # The spool's own events (blocked, resumed, salvaged, replaced) as they happen: shown by
        # diagnostics and counted at once; the spool stores them when it can write.
        self.health.observe((), Batch(events=[event]))
        self.metrics.events.labels(event.kind.value).inc()

    # -- the API's view of the gateway (api.ports.GatewayPort) -------------------------
    def driver_health(self) -> dict[str, MeterHealth]:
        return self.diag.driver_health()

    def _observed(self, items: list[Any], batch: Batch) -> None:
        # The pipeline's after-commit hook: counters for /metrics, per-meter health for /v1/diag.
        self.metrics.observe_items(items, batch)
        self.health.observe(items, batch)

    async def readiness(self) -> dict[str, Any]:
        return await self.diag.readiness()

    def metrics_text(self) -> bytes:
        return generate_latest(self.metrics.registry)

    def status(self, *, per_meter: bool = True) -> dict[str, Any]:
        return self.diag.status(per_meter=per_meter)

    def fleet(self) -> list[MeterSummary]:
        return self.diag.fleet()

    def meter_summary(self, meter_id: str) -> MeterSummary:
        return self.diag.meter_summary(meter_id)

    async def meter_diagnostics(self, meter_id: str) -> MeterDiagnostics:
        return await self.diag.meter(meter_id)

    def recent_payloads(self, meter_id: str) -> list[RecentPayload]:
        return self.diag.recent_payloads(meter_id)

    async def recent_values(self, meter_id: str, channel: Channel) -> tuple[list[Reading], bool]:
        return await self.diag.recent_values(meter_id, channel)

    async def recent_balances(self, meter_id: str) -> tuple[list[BalanceUpdate], bool]:
        return await self.diag.recent_balances(meter_id)

    async def recent_events(self, *, meter_id: str | None = None, limit: int = 20) -> tuple[list[Event], bool]:
        return await self.diag.events(meter_id=meter_id, limit=limit)

    async def deadletters(self, *, meter_id: str | None = None, reason: str | None = None,
                          limit: int = 100) -> tuple[list[DeadLetter], bool]:
        return await self.diag.deadletters(meter_id=meter_id, reason=reason, limit=limit)


__all__ = ["Gateway", "config_meters", "key_mirror", "meters_from_config", "open_configured_store", "payg_checker",
           "payload_formats", "retention_of"]
