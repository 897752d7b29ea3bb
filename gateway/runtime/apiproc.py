"""The API process of `meter-gateway run`: the FastAPI app on uvicorn, in a process of its own.

It reads (and, for the registry, writes) the store through a connection of its own (SQLite in WAL
mode takes readers and a writer from other processes; TimescaleDB through its own pool) and asks
the core for live state over the control socket (gateway.runtime.remote). Its CPU is its own: no
request, however many, takes the pollers' event loop.

It serves the listening socket the supervisor bound (`fd`), so a restarted API process answers on
the same socket and the connections that arrived meanwhile wait in its backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from api.admission import AdmissionLimits
from api.app import create_app
from api.cim.tables import TableError, load_tables
from api.ports import GatewayPort
from gateway.config.schema import GatewayConfig
from gateway.errors import ConfigError, ConfigProblem
from gateway.runtime.control import CoreClient
from gateway.runtime.remote import RemoteGateway
from gateway.runtime.store import key_mirror, open_configured_store
from gateway.runtime.systemd import Notifier
from storage.base import Store

log = logging.getLogger(__name__)

#: How long the API waits at start for the core to answer (and so to have migrated the store).
CORE_WAIT = 10.0


class QuietServer(uvicorn.Server):
    #: Called once the server listens, before it serves a request (uvicorn has no started event).
    on_started: Callable[[QuietServer], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.on_started is not None and self.servers:
            self.on_started(self)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The gateway owns SIGTERM/SIGINT and shuts down in order; uvicorn must not.
        yield


def configured_app(cfg: GatewayConfig, store: Store, gateway: GatewayPort) -> FastAPI:
    """The API as the configuration sets it up (the same in one process or two)."""
    try:
        tables = load_tables(cfg.api.cim_tables) if cfg.api.cim_tables is not None else None
    except TableError as exc:
        raise ConfigError("[api] cim_tables", [ConfigProblem("api.cim_tables", None, str(exc))]) from None
    return create_app(store, gateway, raw_reads_per_second=cfg.diag.raw_reads_per_second, cim_tables=tables,
                      raw_read_burst=cfg.diag.raw_read_burst, key_mirror=key_mirror(cfg),
                      max_body_bytes=cfg.api.max_body_bytes, allowed_hosts=cfg.api.allowed_hosts,
                      admission=AdmissionLimits(max_in_flight=cfg.api.max_in_flight,
                                                retry_after=cfg.api.retry_after))


def server_for(app: FastAPI, cfg: GatewayConfig) -> QuietServer:
    return QuietServer(uvicorn.Config(app, host=cfg.api.host, port=cfg.api.port, log_level="warning",
                                      access_log=False, lifespan="off",
                                      backlog=max(2048, cfg.api.max_in_flight * 4)))


async def serve(server: QuietServer, started: Callable[[str | None], None],
                sockets: list[socket.socket] | None = None) -> None:
    """Run `server` until it exits; `started(url)` once it listens (None: it failed to)."""
    told = False

    def listening(srv: QuietServer) -> None:
        nonlocal told
        sock = srv.servers[0].sockets[0].getsockname()
        url = f"http://{sock[0]}:{sock[1]}"
        log.info("API listening on %s", url)
        told = True
        started(url)

    server.on_started = listening
    task = asyncio.create_task(server.serve(sockets=sockets), name="uvicorn")
    try:
        await asyncio.wait([task])
        if not told:
            started(None)
        task.result()
    finally:
        if not task.done():
            server.should_exit = True
            await asyncio.wait([task], timeout=5)
            task.cancel()


async def run_api(cfg: GatewayConfig, stop: asyncio.Event, *, control: Path, fd: int | None = None) -> None:
    """Serve the API until `stop` is set, asking the core at `control`; on the listening socket `fd` if
    given, else bind [api]."""
    if cfg.api.nice:
        # The core's pollers first: on a busy machine the kernel gives the API what they leave.
        os.nice(cfg.api.nice)
    store = await open_configured_store(cfg)
    remote = RemoteGateway(CoreClient(control), store)
    hello = asyncio.create_task(remote.keep_hello(), name="core-hello")
    stopping = asyncio.create_task(stop.wait(), name="api-stop")
    try:
        # Give the core a moment to migrate the store so the first requests find the tables; if it
        # does not answer, serve anyway: health answers, and readiness says the core is not there.
        await asyncio.wait([hello, stopping], timeout=CORE_WAIT, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            return
        server = server_for(configured_app(cfg, store, remote), cfg)
        sockets = [socket.socket(fileno=fd)] if fd is not None else None
        serving = asyncio.create_task(serve(server, lambda _: Notifier().notify("READY=1"), sockets), name="api")
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        hello.cancel()
        stopping.cancel()
        await asyncio.gather(hello, stopping, return_exceptions=True)
        await store.close()
    log.info("API stopped")
