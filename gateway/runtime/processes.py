"""`meter-gateway run`: a small supervisor of the gateway's two processes.

- the **core** (`meter-gateway core`): drivers, pipeline, spool, forwarder, store writer, and the
  control socket through which the API asks for live state (gateway.runtime.core);
- the **API** (`meter-gateway api`): FastAPI on uvicorn, on the listening socket this supervisor
  bound, reading the store itself (gateway.runtime.apiproc).

So API load, however heavy, runs on the other core of the machine and never takes the pollers'
event loop. SIGTERM (or SIGINT) is passed to both: the core drains its pipeline and spool as it
always did (acknowledged only after a durable commit), the API finishes its requests. A process
that dies is started again after a backoff, logged, counted by the core in /metrics
(`meter_gateway_process_restarts_total{process}`) and raised as a `process_restarted` event. A
process that fails before it was ever ready (a configuration the store refuses, a spool in use)
is a start error, and so is an error a process reported and stopped on (it exits EXIT_REPORTED):
the supervisor stops the other and exits 1, as the one process did, and systemd decides.

Readiness comes from the children as systemd's notify protocol (each has a datagram socket of its
own here, as NOTIFY_SOCKET); the supervisor tells systemd READY=1 once both are ready, passes the
core's WATCHDOG=1 on (it means the pipeline moves), and STOPPING=1 when told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.backoff import Backoff
from gateway.config.schema import GatewayConfig
from gateway.runtime.control import SOCKET_NAME, CoreClient
from gateway.runtime.systemd import Notifier

log = logging.getLogger(__name__)

#: Set in the children's environment: the supervisor's pid (they die with it, see bind_to_parent).
PARENT_ENV = "METER_GATEWAY_SUPERVISOR"
#: A child's exit code after an error it reported itself (the store refuses the migration, the spool
#: is in use): starting it again would meet the same error, so the supervisor stops with exit code 1.
EXIT_REPORTED = 78  # EX_CONFIG, sysexits.h
#: A child that ran this long before dying starts its next backoff from the beginning.
HEALTHY_AFTER = 30.0
#: Seconds the API process gets to finish its requests after SIGTERM.
API_STOP = 10.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    notify: socket.socket
    pass_fds: tuple[int, ...] = ()
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: bool = False
    ever_ready: bool = False
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))

    async def start(self) -> None:
        self.ready = False
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(*self.argv, env=self.env, pass_fds=self.pass_fds)
        log.info("%s process started (pid %d)", self.name, self.proc.pid)


def bind_to_parent() -> None:
    """In a child: die with the supervisor (SIGKILL when it ends, however it ends), so a killed
    `meter-gateway run` never leaves a core holding the spool. Linux only; elsewhere a no-op."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != parent:  # the supervisor ended before prctl took effect
        os._exit(1)


def _exit_detail(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def listening_socket(cfg: GatewayConfig) -> socket.socket:
    """The API's socket, bound here once: an API process that restarts serves the same one."""
    infos = socket.getaddrinfo(cfg.api.host or None, cfg.api.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(max(2048, cfg.api.max_in_flight * 4))
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, config_path: Path, cfg: GatewayConfig) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.systemd = Notifier()
        self.children: list[Child] = []
        self.pending: list[tuple[str, str, float]] = []
        self.told_ready = False
        self.stopping = False
        self.failed: int | None = None
        self.core: CoreClient | None = None

    def _child(self, name: str, runtime: Path, extra: list[str], pass_fds: tuple[int, ...] = ()) -> Child:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        path = runtime / f"{name}.notify"
        sock.bind(str(path))
        sock.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": str(path), PARENT_ENV: str(os.getpid())}
        if name != "core" or self.systemd.watchdog_interval is None:
            env.pop("WATCHDOG_USEC", None)
        argv = [sys.executable, "-m", "gateway", name, "--config", str(self.config_path),
                "--control", str(runtime / SOCKET_NAME), *extra]
        return Child(name, argv, env, sock, pass_fds)

    async def run(self, stop: asyncio.Event) -> int:
        # Private (0700) and short: the notify sockets and the core's control socket (a unix
        # socket's path has at most 107 bytes, which a data directory's may not leave).
        runtime = Path(tempfile.mkdtemp(prefix="meter-gateway-"))
        self.core = CoreClient(runtime / SOCKET_NAME, timeout=10)
        listener: socket.socket | None = None
        try:
            self.children.append(self._child("core", runtime, []))
            if self.cfg.api.enabled:
                listener = listening_socket(self.cfg)
                self.children.append(self._child("api", runtime, ["--fd", str(listener.fileno())],
                                                 (listener.fileno(),)))
            async with asyncio.TaskGroup() as tg:
                for child in self.children:
                    await child.start()
                    tg.create_task(self._listen(child), name=f"{child.name}-notify")
                    tg.create_task(self._keep(child, stop), name=f"{child.name}-keeper")
                await stop.wait()
                self.stopping = True
                self.systemd.notify("STOPPING=1")
                await self._stop_all()
                raise _Done
        except* _Done:
            pass
        finally:
            if listener is not None:
                listener.close()
            for child in self.children:
                child.notify.close()
            shutil.rmtree(runtime, ignore_errors=True)
        log.info("stopped")
        return self.failed or 0

    async def _listen(self, child: Child) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = (await loop.sock_recv(child.notify, 4096)).decode(errors="replace")
            for line in message.splitlines():
                if line == "READY=1":
                    await self._ready(child)
                elif line == "WATCHDOG=1" and child.name == "core" and self.told_ready:
                    self.systemd.notify("WATCHDOG=1")

    async def _ready(self, child: Child) -> None:
        child.ready = child.ever_ready = True
        if not self.told_ready and all(c.ever_ready for c in self.children):
            self.told_ready = True
            self.systemd.notify("READY=1")
            log.info("ready: %s", ", ".join(f"{c.name} (pid {c.proc.pid})" for c in self.children if c.proc))
        await self._report()

    async def _report(self) -> None:
        """Tell the core the restarts so far (it counts them and raises the events)."""
        core = self.children[0]
        if not core.ready or self.stopping or self.core is None:
            return
        totals = {c.name: c.restarts for c in self.children}
        events, self.pending = self.pending, []
        try:
            await self.core.call("processes", totals, events)
        except Exception as exc:  # the supervisor outlives whatever the core answers
            self.pending = events + self.pending
            log.warning("could not report process restarts to the core (told again at its next start): %s", exc)

    async def _keep(self, child: Child, stop: asyncio.Event) -> None:
        """Restart `child` whenever it dies, until the supervisor stops."""
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping:
                return
            # A READY=1 it sent just before it died may still wait in the socket: read it first, or a
            # child killed a moment after it began to serve would count as one that never started.
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while True:
                    if b"READY=1" in child.notify.recv(4096).splitlines():
                        child.ever_ready = True
            child.ready = False
            if code == EXIT_REPORTED:
                log.error("the %s process stopped on the error it reported: stopping", child.name)
                self.failed = 1
                stop.set()
                return
            if not child.ever_ready:
                log.error("the %s process %s before it was ready: stopping", child.name, _exit_detail(code))
                self.failed = code if code > 0 else 1
                stop.set()
                return
            if time.monotonic() - child.started_at > HEALTHY_AFTER:
                child.backoff.reset()
            delay = child.backoff.next()
            detail = _exit_detail(code)
            log.error("the %s process (pid %d) %s; restarting it in %.1f s", child.name, child.proc.pid, detail,
                      delay)
            child.restarts += 1
            self.pending.append((child.name, detail, time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if self.stopping or stop.is_set():
                return
            await child.start()
            if child.name != "core":
                # The core is running: it hears of this restart now, not at its own next start.
                await self._report()

    async def _stop_all(self) -> None:
        deadlines = {"core": self.cfg.gateway.shutdown_deadline + 15.0, "api": API_STOP}
        running = [c for c in self.children if c.proc is not None and c.proc.returncode is None]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)

        async def ended(child: Child) -> None:
            assert child.proc is not None
            try:
                code = await asyncio.wait_for(child.proc.wait(), timeout=deadlines[child.name])
            except TimeoutError:
                log.error("the %s process did not stop within %.0f s: killed", child.name, deadlines[child.name])
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                code = await child.proc.wait()
            if code != 0 and self.failed is None:
                log.error("the %s process %s while stopping", child.name, _exit_detail(code))
                self.failed = 1

        await asyncio.gather(*(ended(c) for c in running))


class _Done(Exception):
    """Ends the supervisor's task group once every child has stopped."""


async def run_processes(config_path: Path, cfg: GatewayConfig, stop: asyncio.Event) -> int:
    """Run the gateway's processes until `stop`; the exit code for `meter-gateway run`."""
    return await Supervisor(config_path, cfg).run(stop)
