"""The composition root: builds every stage, connects them, owns every task.

Start order: spool, store (connected in the background, so a database that is down at
start only delays forwarding), pipeline, forwarder, drivers, API. Stop order (SIGTERM):
drivers first, then the pipeline drains its queue into the spool, then the forwarder
drains the spool into the store until the deadline, then the API stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import generate_latest

from api.app import create_app
from drivers.modbus import BreakerPolicy, MeterHealth, ModbusEndpoint, ModbusPoller, PollTarget, SerialLine
from drivers.mqtt import CommandSettings, CommandTracker, MqttSettings, MqttSubscriber
from gateway.backoff import Backoff
from gateway.config.schema import GatewayConfig
from gateway.errors import InvalidRequest, NotFound, SinkError, SinkUnavailable
from gateway.model import (
    BalanceUpdate,
    Batch,
    Channel,
    Command,
    CommandKind,
    DeadLetter,
    Event,
    EventKind,
    Meter,
    Protocol,
    Reading,
    Submission,
)
from gateway.model.health import MeterDiagnostics, MeterSummary, PollResult, RecentPayload
from gateway.model.profiles import DeviceProfile, Function
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.normalise.payload import PayloadFormat
from gateway.runtime.diag import Diagnostics, watched_meters
from gateway.runtime.health import HealthBook
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.supervise import supervise
from gateway.runtime.systemd import Notifier, PipelineProgress, watchdog
from gateway.validate.payg import PaygChecker, PaygLimits
from gateway.validate.thresholds import ThresholdTable
from gateway.validate.validator import Validator
from storage.base import Store
from storage.files import private_dir
from storage.open import ManagedStore, open_store
from storage.spool import Spool, SpoolStats
from storage.spool.forwarder import Forwarder

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway owns SIGTERM/SIGINT and shuts down in order; uvicorn must not.
        yield


def retention_of(config: GatewayConfig) -> timedelta | None:
    """storage.retention as a period (validated at load), or None: keep for ever."""
    from gateway.config.periods import parse_period

    return None if config.storage.retention is None else parse_period(config.storage.retention)


async def open_configured_store(config: GatewayConfig) -> ManagedStore:
    """The store that `config` names, open (not migrated), stamping the gateway's id on what it writes."""
    st = config.storage
    from gateway.config.periods import parse_period

    return await open_store(st.backend, sqlite_path=config.data_path(st.sqlite_path), dsn=st.dsn,
                            chunk_interval=st.chunk_interval, retention=retention_of(config),
                            gateway_id=config.gateway.id,
                            estimate_window=parse_period(st.billing_estimate_window))  # fmt: skip


def meters_from_config(config: GatewayConfig) -> list[Meter]:
    out = []
    for m in config.meters:
        if m.protocol == "modbus":
            ep = next(e for e in config.modbus.endpoints if e.name == m.endpoint)
            protocol = {"tcp": Protocol.MODBUS_TCP, "rtu_tcp": Protocol.MODBUS_RTU_TCP,
                        "serial": Protocol.MODBUS_RTU}[ep.kind]
            address = f"{ep.address}/{m.unit}"
        else:
            protocol = Protocol.MQTT
            address = config.mqtt.all_topics()[0].replace("{meter_id}", m.meter_id)
        out.append(Meter(meter_id=m.meter_id, utility=m.utility, protocol=protocol, address=address,
                         model=m.profile if m.protocol == "modbus" else "payg", device_number=m.device_number,
                         payg=m.payg or m.protocol == "mqtt", status=m.status, consumer_number=m.consumer_number,
                         location=m.location, tags=dict(m.tags)))
    return out


def key_mirror(config: GatewayConfig) -> Path:
    """The local copy of API key hashes that authenticates while the store is down (api.auth.KeyCache)."""
    return config.data_path(Path("api_keys.json"))


def config_meters(config: GatewayConfig) -> list[tuple[Meter, frozenset[str]]]:
    """The configured meters, each with the names of the fields its file sets (for Store.sync_meters,
    which keeps what the API changed in the fields the file leaves out)."""
    return [(meter, frozenset(section.model_fields_set))
            for meter, section in zip(meters_from_config(config), config.meters, strict=True)]


class Gateway:
    """One gateway process: `await Gateway(config, profiles).run(stop)`."""

    def __init__(self, config: GatewayConfig, profiles: dict[str, DeviceProfile], *,
                 config_path: Path | None = None, store: Store | None = None) -> None:
        self.config = config
        self.profiles = profiles
        self.config_path = config_path
        self.config_hash = hashlib.sha256(config_path.read_bytes()).hexdigest()[:16] if config_path and config_path.exists() else None
        self._given_store = store
        self.store: Store | None = store
        self.store_ready = asyncio.Event()
        self.migrated = False
        self.started_at = time.time()
        self.pollers: dict[str, ModbusPoller] = {}
        self.subscriber: MqttSubscriber | None = None
        self.pipeline: Pipeline | None = None
        self.forwarder: Forwarder | None = None
        self.spool: Spool | None = None
        self.api_server: uvicorn.Server | None = None
        self.started = asyncio.Event()
        self.api_url: str | None = None
        self.metrics = GatewayMetrics()
        #: What technicians see per meter; fed by the pipeline after each spool commit.
        self.health = HealthBook(watched_meters(config), silent_after=config.diag.silent_after,
                                 recent_readings=config.diag.recent_readings)
        self.diag = Diagnostics(self, self.health)
        self.payg_checker = payg_checker(config)

    # -- build -------------------------------------------------------------------
    def _modbus(self) -> list[ModbusPoller]:
        cfg = self.config
        by_endpoint: dict[str, list[PollTarget]] = {}
        for m in cfg.meters:
            if m.protocol != "modbus" or m.status.value != "active":
                continue
            assert m.endpoint is not None and m.unit is not None  # cross-checked at load
            by_endpoint.setdefault(m.endpoint, []).append(PollTarget(
                meter_id=m.meter_id, unit=m.unit, profile=self.profiles[m.profile],
                interval=m.interval or cfg.modbus.default_interval,
                align=cfg.modbus.default_align if m.align is None else m.align,
                jitter=cfg.modbus.default_jitter if m.jitter is None else m.jitter))
        breaker = BreakerPolicy(cfg.modbus.breaker_failures, cfg.modbus.breaker_cooldown,
                                cfg.modbus.breaker_max_cooldown)
        pollers = []
        for ep in cfg.modbus.endpoints:
            targets = by_endpoint.get(ep.name)
            if not targets:
                continue
            serial = (SerialLine(ep.serial_port, ep.baudrate, ep.parity, ep.stopbits, ep.bytesize)
                      if ep.kind == "serial" and ep.serial_port else None)
            endpoint = ModbusEndpoint(name=ep.name, host=ep.host or "", port=ep.port, transport=ep.kind,
                                      serial=serial, timeout=ep.timeout, pause=ep.pause, retries=ep.retries,
                                      retry_delay=ep.retry_delay, late_reply_grace=ep.late_reply_grace,
                                      max_gap=ep.max_gap)
            assert self.pipeline is not None
            pollers.append(ModbusPoller(endpoint, targets, self.pipeline.emit, breaker=breaker,
                                        failures_before_lost=cfg.modbus.failures_before_lost))
        return pollers

    def _mqtt(self) -> MqttSubscriber | None:
        cfg = self.config
        payg = {m.meter_id for m in cfg.meters if m.protocol == "mqtt"}
        if not cfg.mqtt.enabled or not payg:
            return None
        m = cfg.mqtt
        settings = MqttSettings(host=m.host, port=m.port, client_id=m.client_id or f"meter-gateway-{cfg.gateway.id}",
                                protocol=m.protocol, username=m.username, password=m.password,
                                tls_ca=str(m.tls_ca) if m.tls_ca else None,
                                tls_cert=str(m.tls_cert) if m.tls_cert else None,
                                tls_key=str(m.tls_key) if m.tls_key else None,
                                keepalive=m.keepalive, session_expiry=m.session_expiry, max_inflight_acks=m.max_inflight,
                                reconnect_min=m.reconnect_min_delay, reconnect_max=m.reconnect_max_delay)
        assert self.pipeline is not None
        commands = None
        if m.commands:
            # Correlation ids start with the gateway id: gateways sharing a store and a broker each
            # settle only their own commands.
            commands = CommandTracker(
                CommandSettings(command_topic=m.command_topic, reply_topic=m.reply_topic, timeout=m.command_timeout),
                persist=self._save_command, claim=self._claim_command, retry_unsent=self._retry_unsent_command,
                load=self._load_command, emit=self.pipeline.emit, known_meters=payg,
                # The balance update a meter sends with its reply is not consumption (issue 27, item 12).
                replied=self.payg_checker.command_replied,
                currencies=dict.fromkeys(payg, m.currency), currency_decimals=m.currency_decimals,
                origin=cfg.gateway.id)
        return MqttSubscriber(settings, m.all_topics(), self.pipeline.emit, known_meters=payg,
                              share_group=m.share_group, commands=commands)

    # -- PAYG commands (the API calls these) ---------------------------------------
    async def send_command(self, meter_id: str, kind: CommandKind | str, amount: Decimal | None = None,
                           reference: str | None = None) -> Command:
        """`submit_command`, for callers that need only the command."""
        return (await self.submit_command(meter_id, kind, amount, reference)).command

    async def submit_command(self, meter_id: str, kind: CommandKind | str, amount: Decimal | None = None,
                             reference: str | None = None, idempotency_key: str | None = None) -> Submission:
        """Publish a top-up, disconnect or reconnect to a PAYG meter and track it, once per key (the
        reference, the idempotency key): a repeat gets the stored command (`replayed`). Returns the
        command PENDING (FAILED if the broker did not confirm it). NotFound (not a PAYG meter),
        InvalidRequest (bad kind or amount, commands off), InvalidField (too many decimals),
        KeyConflict (a key of another command), ConnectionFailed (broker not connected),
        SinkUnavailable (the store cannot record it): in those cases nothing was sent."""
        if self.subscriber is None or self.subscriber.commands is None:
            raise InvalidRequest(f"meter {meter_id}: PAYG commands are off (mqtt disabled, no PAYG meters, "
                                 "or mqtt.commands = false)")
        return await self.subscriber.commands.submit(meter_id, kind, amount=amount, reference=reference,
                                                     key=idempotency_key)

    async def get_command(self, correlation_id: str) -> Command:
        """A command's latest status: the tracker's if it holds it, else the store's. NotFound."""
        tracker = self.subscriber.commands if self.subscriber is not None else None
        command = tracker.get(correlation_id) if tracker is not None else None
        if command is None and self.store is not None and self.store_ready.is_set():
            command = await self.store.get_command(correlation_id)
        if command is None:
            raise NotFound("command", correlation_id)
        return command

    def commands_available(self) -> bool:
        """Whether this gateway can send PAYG commands (MQTT on, commands on, PAYG meters configured)."""
        return self.subscriber is not None and self.subscriber.commands is not None

    def poll_intervals(self) -> dict[str, float]:
        """Seconds between polls of each configured Modbus meter (the API's silent-meter rule)."""
        cfg = self.config
        return {m.meter_id: m.interval or cfg.modbus.default_interval for m in cfg.meters if m.protocol == "modbus"}

    async def _save_command(self, command: Command) -> None:
        if self.store is None or not self.store_ready.is_set():
            raise SinkUnavailable("the store is not connected yet: the command cannot be recorded")
        await self.store.save_command(command)

    async def _claim_command(self, command: Command) -> list[Command]:
        if self.store is None or not self.store_ready.is_set():
            raise SinkUnavailable("the store is not connected yet: the command cannot be recorded")
        return await self.store.claim_command(command)

    async def _retry_unsent_command(self, correlation_id: str, at: datetime) -> Command | None:
        if self.store is None or not self.store_ready.is_set():
            raise SinkUnavailable("the store is not connected yet: the command cannot be recorded")
        return await self.store.retry_unsent_command(correlation_id, at)

    async def _load_command(self, correlation_id: str) -> Command | None:
        if self.store is None or not self.store_ready.is_set():
            raise SinkUnavailable("the store is not connected yet")
        return await self.store.get_command(correlation_id)

    # -- run ---------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down in order within the deadline."""
        cfg = self.config
        validator = _validator(cfg, self.profiles)
        payg = {m.meter_id: PaygOptions(cfg.mqtt.currency, _threshold(cfg, m.meter_id))
                for m in cfg.meters if m.protocol == "mqtt"}
        normaliser = Normaliser({m.meter_id: self.profiles[m.profile] for m in cfg.meters if m.protocol == "modbus"}, payg,
                                payload_formats=payload_formats(cfg))

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
                                     on_batch=self._observed, payg=self.payg_checker)
            # Before any driver runs: what is spooled but not yet stored is already accepted, so a
            # re-delivered message must not raise its PAYG events again.
            await self._seed_payg_from_spool()
            self.forwarder = Forwarder(self.spool, self.store, batch_items=cfg.spool.batch_size,
                                       linger=cfg.spool.linger)
            self.forwarder.state.on_write.append(
                lambda result, seconds: self.metrics.observe_sink(
                    result.readings_inserted + result.balances_inserted + result.events_inserted
                    + result.deadletters_inserted, seconds))
            self.metrics.attach(self)
            self.pollers = {p.endpoint.name: p for p in self._modbus()}
            self.subscriber = self._mqtt()
            async with asyncio.TaskGroup() as tg:
                keeper = tg.create_task(self._keep_store(validator), name="store-keeper")
                maintenance_task = tg.create_task(self._maintenance(), name="maintenance")
                spool_watch = tg.create_task(self.spool.watch(cfg.spool.check_interval), name="spool-watch")
                pipeline_task = tg.create_task(self.pipeline.run(), name="pipeline")
                forwarder_task = tg.create_task(self._forward(), name="forwarder")
                drivers_task = tg.create_task(self._run_drivers(), name="drivers")
                api_task = tg.create_task(self._serve_api(), name="api") if cfg.api.enabled else None
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
                keeper.cancel()
                maintenance_task.cancel()
                spool_watch.cancel()
                if self.api_server is not None:
                    self.api_server.should_exit = True
        log.info("stopped")

    async def _keep_store(self, validator: Validator) -> None:
        """Connect and migrate the store, retrying while it is down; then seed VEE history."""
        assert self.store is not None
        backoff = Backoff(0.5, 15.0)
        while True:
            try:
                await self.store.migrate()
                await self.store.sync_meters(config_meters(self.config), at=datetime.now(UTC))
                history = await self.store.last_cumulative()
                # VEE windows (spike statistics, flat runs, profiles, regression episodes) from
                # stored history, so the first reading after a restart is checked against it.
                since = datetime.now(UTC) - timedelta(hours=self.config.vee.seed_hours)
                vee_history = await self.store.cumulative_history(since=since) if self.config.vee.seed_hours else []
                inspections = await self.store.events(kind=EventKind.INSPECTION_RECOMMENDED, limit=10_000)
                balances = [await self.store.latest_balance(m.meter_id)
                            for m in self.config.meters if m.protocol == "mqtt"]
                break
            except (SinkUnavailable, OSError) as exc:
                log.warning("store not reachable yet (%s); readings are kept in the spool meanwhile", exc)
                await asyncio.sleep(backoff.next())
        validator.seed_history(vee_history)
        validator.seed((h.meter_id, h.channel, h.ts, h.value) for h in history)
        validator.seed_inspections(inspections)
        self.payg_checker.seed(balances)
        await self._restore_commands()
        self.migrated = True
        log.info("store ready: %s", self.store.mode)
        self.store_ready.set()

    async def _maintenance(self) -> None:
        """Every `storage.retention_check` seconds: drop data older than `storage.retention`
        (the store knows how: drop_chunks, DELETE, or nothing where TimescaleDB's own
        policy does it), then, with `storage.reorder_chunks`, reorder closed readings chunks
        by meter (TimescaleDB, Apache license; no chunk started after a minute of a run). A
        store that is down is simply tried again next time."""
        storage = self.config.storage
        if storage.retention is None and not storage.reorder_chunks:
            return
        await self.store_ready.wait()
        assert self.store is not None
        while True:
            if storage.retention is not None:
                try:
                    await self.store.apply_retention()
                except SinkError as exc:
                    log.warning("retention run failed (tried again in %.0f s): %s", storage.retention_check, exc)
            if storage.reorder_chunks:
                try:
                    await self.store.reorder()
                except SinkError as exc:
                    log.warning("reordering readings chunks failed (tried again in %.0f s): %s",
                                storage.retention_check, exc)
            await asyncio.sleep(storage.retention_check)

    async def _seed_payg_from_spool(self) -> None:
        assert self.spool is not None
        # peek returns the oldest batches (bounded); enough for the usual few after a crash.
        chunk = await self.spool.peek(50_000)
        seeded = self.payg_checker.seed(b for _, batch in chunk for b in batch.balances)
        if seeded:
            log.info("PAYG checker: %d balance updates from the spool seeded", seeded)

    async def _restore_commands(self) -> None:
        """Follow this gateway's commands that were still pending when it stopped."""
        tracker = self.subscriber.commands if self.subscriber is not None else None
        if tracker is None or self.store is None:
            return
        try:
            restored = tracker.restore(await self.store.commands(limit=1000))
        except Exception as exc:  # the gateway runs on without them; their replies are unmatched
            log.warning("pending PAYG commands could not be restored from the store: %s", exc)
            return
        if restored:
            log.info("following %d PAYG commands still pending from before the restart", restored)

    async def _forward(self) -> None:
        await self.store_ready.wait()
        assert self.forwarder is not None
        await self.forwarder.run()

    async def _run_drivers(self) -> None:
        # Give VEE its history first (a store that is down only delays the first polls a little).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.store_ready.wait(), timeout=self.config.vee.seed_wait)
        async with asyncio.TaskGroup() as tg:
            for name, poller in self.pollers.items():
                tg.create_task(supervise(f"modbus:{name}", poller.run), name=f"modbus:{name}")
            if self.subscriber is not None:
                tg.create_task(supervise("mqtt", self.subscriber.run), name="mqtt")

    async def _serve_api(self) -> None:
        assert self.store is not None
        cfg = self.config
        # Give the store a moment to migrate so the first requests find the tables; if it
        # is down, serve anyway: health answers, and data requests say 503 until it returns.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.store_ready.wait(), timeout=5.0)
        app = create_app(self.store, self, raw_reads_per_second=cfg.diag.raw_reads_per_second,
                         raw_read_burst=cfg.diag.raw_read_burst, key_mirror=key_mirror(cfg),
                         max_body_bytes=cfg.api.max_body_bytes, allowed_hosts=cfg.api.allowed_hosts)
        server = _EmbeddedServer(uvicorn.Config(app, host=cfg.api.host, port=cfg.api.port, log_level="warning",
                                                access_log=False, lifespan="off"))
        self.api_server = server
        serve = asyncio.create_task(server.serve(), name="uvicorn")
        try:
            while not server.started and not serve.done():  # noqa: ASYNC110 - uvicorn has no started event
                await asyncio.sleep(0.02)
            if server.started:
                sock = server.servers[0].sockets[0].getsockname()
                self.api_url = f"http://{sock[0]}:{sock[1]}"
                log.info("API listening on %s", self.api_url)
            self.started.set()
            await serve
        finally:
            if not serve.done():
                server.should_exit = True
                await asyncio.wait([serve], timeout=5)
                serve.cancel()

    # -- technicians' Modbus tools (the diagnostics API calls these; see runtime/diag.py) ----
    async def poll_now(self, meter_id: str) -> PollResult:
        """Read a Modbus meter at once, past its schedule and breaker, and decode it (not stored).
        NotFound, InvalidRequest (PAYG or inactive meter), DriverError."""
        return await self.diag.poll_now(meter_id)

    async def read_registers(self, endpoint: str, unit: int, function: Function, address: int,
                             count: int) -> tuple[int, ...]:
        """Raw read (FC 03/04, at most 125 registers) on a configured endpoint. NotFound,
        InvalidRequest, DriverError."""
        return await self.diag.read_registers(endpoint, unit, function, address, count)

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
        return self.diag.modbus_health()

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


def _validator(cfg: GatewayConfig, profiles: dict[str, DeviceProfile]) -> Validator:
    """VEE for the configured meters: register moduli, poll intervals, utilities, [vee] thresholds."""
    modbus = [m for m in cfg.meters if m.protocol == "modbus"]
    moduli = {(m.meter_id, r.channel): r.modulus * _unit_factor(r)
              for m in modbus for r in profiles[m.profile].registers if r.modulus}
    # A meter whose profile measures export is bidirectional: its power may read negative.
    bidirectional = {m.meter_id for m in modbus
                     if any(r.channel is Channel.ENERGY_EXPORT for r in profiles[m.profile].registers)}
    return Validator(moduli, intervals={m.meter_id: m.interval or cfg.modbus.default_interval for m in modbus},
                     utilities={m.meter_id: m.utility for m in cfg.meters},
                     thresholds=ThresholdTable.from_config(cfg.vee.thresholds_doc()), bidirectional=bidirectional,
                     window=cfg.vee.spike_window, estimate=cfg.vee.estimate,
                     estimate_min_interval=cfg.vee.estimate_min_interval)


def _unit_factor(spec: Any) -> float:
    from gateway.model.units import conversion_factor

    return conversion_factor(spec.unit, spec.channel)


def _threshold(cfg: GatewayConfig, meter_id: str) -> Decimal:
    meter = next(m for m in cfg.meters if m.meter_id == meter_id)
    return meter.low_credit_threshold if meter.low_credit_threshold is not None else cfg.mqtt.low_credit_threshold


def payload_formats(cfg: GatewayConfig) -> list[tuple[str, PayloadFormat]]:
    """(topic template, payload format) for every balance topic of the [mqtt] section."""
    m = cfg.mqtt
    future = timedelta(seconds=m.max_future)
    out = [(t, PayloadFormat(m.payload_format, dict(m.field_mapping), m.timestamp, m.max_payload_bytes, future))
           for t in m.topics]
    for src in m.sources:
        mapping = m.field_mapping if src.field_mapping is None else src.field_mapping
        out.append((src.topic, PayloadFormat(src.payload_format or m.payload_format, dict(mapping),
                                             src.timestamp or m.timestamp, m.max_payload_bytes, future)))
    return out


def payg_checker(cfg: GatewayConfig) -> PaygChecker:
    """The PAYG event checker with each meter's low-credit threshold and drain limit."""
    limits = {}
    for meter in cfg.meters:
        if meter.protocol == "mqtt":
            drain = meter.max_drain_per_hour if meter.max_drain_per_hour is not None else cfg.mqtt.max_drain_per_hour
            limits[meter.meter_id] = PaygLimits(low_credit_threshold=_threshold(cfg, meter.meter_id),
                                                max_drain_per_hour=drain)
    return PaygChecker(limits, PaygLimits(cfg.mqtt.low_credit_threshold, cfg.mqtt.max_drain_per_hour))


__all__ = ["Gateway", "config_meters", "key_mirror", "meters_from_config", "payg_checker", "payload_formats"]
