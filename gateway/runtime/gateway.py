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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn

from api.app import create_app
from drivers.modbus import ModbusEndpoint, ModbusPoller, PollTarget
from drivers.mqtt import MqttSettings, MqttSubscriber
from gateway import __version__
from gateway.backoff import Backoff
from gateway.config.schema import GatewayConfig
from gateway.errors import SinkUnavailable
from gateway.model import Event, EventKind, Meter, Protocol, Severity
from gateway.model.profiles import DeviceProfile
from gateway.normalise.normaliser import Normaliser, PaygOptions
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.supervise import supervise
from gateway.runtime.systemd import Notifier, PipelineProgress, watchdog
from gateway.validate.validator import Validator
from storage.base import Store
from storage.open import open_store
from storage.spool import Spool, SpoolStats
from storage.spool.forwarder import Forwarder

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway owns SIGTERM/SIGINT and shuts down in order; uvicorn must not.
        yield


def meters_from_config(config: GatewayConfig) -> list[Meter]:
    out = []
    for m in config.meters:
        if m.protocol == "modbus":
            ep = next(e for e in config.modbus.endpoints if e.name == m.endpoint)
            protocol = Protocol.MODBUS_RTU_TCP if ep.framer == "rtu" else Protocol.MODBUS_TCP
            address = f"{ep.host}:{ep.port}/{m.unit}"
        else:
            protocol = Protocol.MQTT
            address = config.mqtt.topics[0].replace("{meter_id}", m.meter_id)
        out.append(Meter(meter_id=m.meter_id, utility=m.utility, protocol=protocol, address=address,
                         model=m.profile if m.protocol == "modbus" else "payg", device_number=m.device_number,
                         payg=m.payg or m.protocol == "mqtt", status=m.status, consumer_number=m.consumer_number,
                         location=m.location, tags=dict(m.tags)))
    return out


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
                interval=m.interval or cfg.modbus.default_interval))
        pollers = []
        for ep in cfg.modbus.endpoints:
            targets = by_endpoint.get(ep.name)
            if not targets:
                continue
            endpoint = ModbusEndpoint(name=ep.name, host=ep.host, port=ep.port, framer=ep.framer,
                                      timeout=ep.timeout, pause=ep.pause)
            assert self.pipeline is not None
            pollers.append(ModbusPoller(endpoint, targets, self.pipeline.emit))
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
                                tls_key=str(m.tls_key) if m.tls_key else None)
        assert self.pipeline is not None
        return MqttSubscriber(settings, m.topics, self.pipeline.emit, known_meters=payg, share_group=m.share_group)

    # -- run ---------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down in order within the deadline."""
        cfg = self.config
        moduli = {(m.meter_id, r.channel): r.modulus * _unit_factor(r)
                  for m in cfg.meters if m.protocol == "modbus"
                  for r in self.profiles[m.profile].registers if r.modulus}
        validator = Validator(moduli)
        payg = {m.meter_id: PaygOptions(cfg.mqtt.currency, cfg.mqtt.low_credit_threshold)
                for m in cfg.meters if m.protocol == "mqtt"}
        normaliser = Normaliser({m.meter_id: self.profiles[m.profile] for m in cfg.meters if m.protocol == "modbus"}, payg)

        async with contextlib.AsyncExitStack() as stack:
            self.spool = await stack.enter_async_context(Spool(
                cfg.data_path(cfg.spool.path), max_bytes=cfg.spool.max_bytes, on_high_water=self._spool_high))
            if self.store is None:
                self.store = await open_store(cfg.storage.backend, sqlite_path=cfg.data_path(cfg.storage.sqlite_path),
                                              dsn=cfg.storage.dsn, chunk_interval=cfg.storage.chunk_interval)
                stack.push_async_callback(self.store.close)
            self.pipeline = Pipeline(normaliser, validator, self.spool, queue_size=cfg.gateway.queue_size)
            self.forwarder = Forwarder(self.spool, self.store, batch_items=cfg.spool.batch_size)
            self.pollers = {p.endpoint.name: p for p in self._modbus()}
            self.subscriber = self._mqtt()
            async with asyncio.TaskGroup() as tg:
                keeper = tg.create_task(self._keep_store(validator), name="store-keeper")
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
                await self.pipeline.close()
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
                await self.store.upsert_meters(meters_from_config(self.config))
                history = await self.store.last_cumulative()
                break
            except (SinkUnavailable, OSError) as exc:
                log.warning("store not reachable yet (%s); readings are kept in the spool meanwhile", exc)
                await asyncio.sleep(backoff.next())
        validator.seed((h.meter_id, h.channel, h.ts, h.value) for h in history)
        self.migrated = True
        log.info("store ready: %s", self.store.mode)
        self.store_ready.set()

    async def _forward(self) -> None:
        await self.store_ready.wait()
        assert self.forwarder is not None
        await self.forwarder.run()

    async def _run_drivers(self) -> None:
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
        app = create_app(self.store, self)
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

    def _spool_high(self, stats: SpoolStats) -> None:
        ev = Event(ts=datetime.now(UTC), meter_id=None, kind=EventKind.SPOOL_HIGH, severity=Severity.CRITICAL,
                   detail=f"spool at {stats.fill:.0%} of {stats.max_bytes} bytes ({stats.items} items waiting)")
        if self.pipeline is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self.pipeline.queue.put_nowait(ev)

    # -- the API's view of the gateway (api.ports.GatewayPort) -------------------------
    def readiness(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        fw = self.forwarder
        sink_ok = self.store_ready.is_set() and (fw is None or fw.state.sink_up)
        checks["sink"] = {"ok": sink_ok, "detail": "reachable" if sink_ok else
                          (fw.state.last_error if fw and fw.state.last_error else "not connected yet")}
        checks["migrations"] = {"ok": self.migrated, "detail": "applied" if self.migrated else "pending"}
        if self.spool is not None:
            st = self.spool.stats()
            checks["spool"] = {"ok": st.fill < self.spool.high_water,
                               "detail": f"{st.items} items, {st.fill:.1%} of limit"}
        if self.subscriber is not None:
            connected = bool(self.subscriber.health().get("connected"))
            checks["broker"] = {"ok": connected, "detail": "connected" if connected else "disconnected"}
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks,
                "storage_mode": self.store.mode if self.store is not None else "unknown"}

    def status(self) -> dict[str, Any]:
        spool = self.spool.stats() if self.spool else None
        fw = self.forwarder.state if self.forwarder else None
        return {
            "gateway_id": self.config.gateway.id,
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "config_file": str(self.config_path) if self.config_path else None,
            "config_hash": self.config_hash,
            "storage_mode": self.store.mode if self.store else None,
            "spool": None if spool is None else {"rows": spool.rows, "items": spool.items, "bytes": spool.bytes,
                                                 "max_bytes": spool.max_bytes, "oldest_age_s": spool.oldest_age_s},
            "sink": None if fw is None else {"up": fw.sink_up, "last_error": fw.last_error, "rows": fw.rows,
                                             "batches": fw.batches, "retries": fw.retries},
            "pipeline": None if self.pipeline is None else {
                "queue": self.pipeline.queue.qsize(), "readings": self.pipeline.counters.readings,
                "balances": self.pipeline.counters.balances, "deadletters": self.pipeline.counters.deadletters},
            "modbus": {name: {m: _health_dict(h) for m, h in p.health().items()} for name, p in self.pollers.items()},
            "mqtt": self.subscriber.health() if self.subscriber else None,
        }


def _health_dict(h: object) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    d = asdict(h) if is_dataclass(h) and not isinstance(h, type) else dict(vars(h))
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in d.items() if k != "last_raw"}


def _unit_factor(spec: Any) -> float:
    from gateway.normalise.units import conversion_factor

    return conversion_factor(spec.unit, spec.channel)


__all__ = ["Gateway", "meters_from_config"]
