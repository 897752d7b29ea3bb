"""A fleet of simulated DLMS meters in one asyncio process: one TCP listener per meter (a real fleet is one
meter per IP at port 4059; here meter k listens on port + k - 1 of the same host), each speaking the
IEC 62056-47 wrapper, and optional DataNotification pushes to a head-end listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from types import TracebackType

from simulators.dlms import axdr, cipher
from simulators.dlms.catalogue import HISTORY_DAYS, PUSH_OBJECTS, Key, build_objects
from simulators.dlms.faults import DRIFT_S, faulty_secrets
from simulators.dlms.meter import SERVER_LOGICAL, MeterSpec, MeterState, Secrets
from simulators.dlms.model import Consumption, floor_interval
from simulators.dlms.objects import CosemObject, obis
from simulators.dlms.session import Session

log = logging.getLogger(__name__)
WRAPPER_VERSION = 1
PUSH_CLIENT = 102  # the IDIS push destination SAP
MAX_WRAPPED = 0xFFFF


@dataclass(frozen=True, slots=True)
class FleetOptions:
    meters: int = 10
    host: str = "127.0.0.1"
    port: int = 4059  # meter k on port + k - 1; 0 = a free port each
    seed: int = 1
    secrets: Secrets = field(default_factory=Secrets)
    history_days: int = HISTORY_DAYS
    speedup: float = 1.0
    faults: dict[str, frozenset[str]] = field(default_factory=dict)
    push: tuple[str, int] | None = None
    push_interval: float = 60.0
    prefix: str = "D-"

    def meter_ids(self) -> list[str]:
        return [f"{self.prefix}{i:04d}" for i in range(1, self.meters + 1)]


@dataclass
class SimMeter:
    state: MeterState
    objects: dict[Key, CosemObject]
    port: int = 0
    sessions: int = 0
    #: What went wrong on this meter's lines (bad input, refusals), newest last; bounded for long runs.
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    @property
    def meter_id(self) -> str:
        return self.state.spec.meter_id


def wrap(source: int, destination: int, apdu: bytes) -> bytes:
    return struct.pack(">HHHH", WRAPPER_VERSION, source, destination, len(apdu)) + apdu


class DlmsFleet:
    """`async with DlmsFleet(options) as fleet:` serves until the block ends; `fleet.meters` by id."""

    def __init__(self, options: FleetOptions) -> None:
        if options.meters < 1:
            raise ValueError("--meters must be at least 1")
        self.options = options
        self._wall0 = time.time()
        self._skew = 0.0
        start = dt.datetime.fromtimestamp(self._wall0, dt.UTC)
        midnight = floor_interval(start).replace(hour=0, minute=0)
        origin = midnight - dt.timedelta(days=options.history_days)
        # Server invocation counters rise across simulator restarts (a real meter's never go back).
        ic0 = max(1, int((self._wall0 - 1_600_000_000) * 10)) & 0x7FFFFFFF
        self.meters: dict[str, SimMeter] = {}
        for n, meter_id in enumerate(options.meter_ids(), 1):
            faults = options.faults.get(meter_id, frozenset())
            secrets = faulty_secrets(options.secrets, meter_id) if "wrong_key" in faults else options.secrets
            state = MeterState(MeterSpec(meter_id, n, secrets), Consumption(options.seed, n, origin), self.now,
                               faults=faults, drift_s=DRIFT_S if "drift" in faults else 0.0, server_ic=ic0)
            state.credit_minor = 2_000 + (n * 7_919 + options.seed * 104_729) % 18_000
            state.credit_since = start  # credit counts down from the fleet's start, not the history's origin
            destination = f"{options.push[0]}:{options.push[1]}" if options.push else ""
            self.meters[meter_id] = SimMeter(state, build_objects(state, destination, options.history_days))
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def now(self) -> dt.datetime:
        """Simulated time: the wall clock, sped up from the fleet's start, plus what advance() added."""
        wall = time.time()
        return dt.datetime.fromtimestamp(self._wall0 + (wall - self._wall0) * self.options.speedup + self._skew,
                                         dt.UTC)

    def advance(self, seconds: float) -> None:
        """Move simulated time forward for every meter (tests: intervals pass without waiting)."""
        self._skew += seconds

    async def __aenter__(self) -> DlmsFleet:
        o = self.options
        try:
            for k, meter in enumerate(self.meters.values()):
                port = o.port + k if o.port else 0
                server = await asyncio.start_server(self._handler(meter), o.host, port)
                self._servers.append(server)
                meter.port = server.sockets[0].getsockname()[1]
        except BaseException:
            await self._close()
            raise
        if o.push:
            for k, meter in enumerate(self.meters.values()):
                delay = o.push_interval * k / len(self.meters)
                self._spawn(self._push_loop(meter, delay))
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            server.close()
        for writer in list(self._writers):  # open connections end too (Server.close leaves them in 3.11)
            writer.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._servers.clear()

    def _handler(self, meter: SimMeter) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(meter, reader, writer)
        return serve

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_faults(self, meter_id: str, faults: frozenset[str]) -> None:
        """Change a meter's faults while it runs (tests); wrong_key and drift are fixed at build."""
        self.meters[meter_id].state.faults = faults

    # -- one connection ----------------------------------------------------------------------------
    async def _serve(self, meter: SimMeter, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        meter.sessions += 1
        self._writers.add(writer)
        session = Session(meter.state, meter.objects)
        try:
            while True:
                header = await reader.readexactly(8)
                version, source, destination, n = struct.unpack(">HHHH", header)
                if version != WRAPPER_VERSION:
                    meter.errors.append(f"wrapper version {version} (header {header.hex()}): connection closed")
                    return
                apdu = await reader.readexactly(n)
                faults = meter.state.faults
                if destination != SERVER_LOGICAL:  # a real meter's logical device 1 ignores other addresses
                    meter.errors.append(f"wrapper to server address {destination}: not answered")
                    continue
                if "timeout" in faults:
                    continue
                try:
                    answer = session.handle(apdu, source)
                except Exception as exc:  # a simulator bug must not take the fleet down: say it, drop the line
                    meter.errors.append(f"APDU {apdu[:32].hex()}: {exc!r}")
                    log.exception("%s: APDU %s", meter.meter_id, apdu[:32].hex())
                    return
                if "garbage" in faults and session.state == "associated" and session.requests % 2 == 1 \
                        and apdu[0] != 0x60:
                    answer = b"\xde\xad" + bytes(range(7, 40, 3))
                if answer is not None:
                    writer.write(wrap(destination, source, answer))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            meter.errors.extend(session.log)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- push --------------------------------------------------------------------------------------
    def notification(self, meter: SimMeter, invoke_id: int) -> bytes:
        """A DataNotification APDU (ciphered when the fleet is) with the push setup's objects."""
        state = meter.state
        values = [meter.objects[(c, obis(ln))].get(a, None, 0) for c, ln, a in PUSH_OBJECTS]
        apdu = (b"\x0f" + (invoke_id & 0x00FFFFFF).to_bytes(4, "big") + b"\x0c"
                + axdr.cosem_datetime(state.meter_time()) + axdr.structure(*values))
        secrets = state.spec.secrets
        if not secrets.cipher:
            return apdu
        keys = cipher.Keys(secrets.encryption_key, secrets.authentication_key)
        return cipher.seal(apdu, cipher.GENERAL_GLO, state.spec.system_title, state.next_server_ic(), keys)

    async def _push_loop(self, meter: SimMeter, delay: float) -> None:
        assert self.options.push is not None
        host, port = self.options.push
        await asyncio.sleep(delay)
        invoke_id = 0
        while True:
            invoke_id += 1
            try:
                if "timeout" not in meter.state.faults:
                    await self.push_once(meter, host, port, invoke_id)
            except (OSError, TimeoutError) as exc:
                meter.errors.append(f"push to {host}:{port}: {exc!r}")
            await asyncio.sleep(self.options.push_interval)

    async def push_once(self, meter: SimMeter, host: str, port: int, invoke_id: int = 1) -> None:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        try:
            writer.write(wrap(SERVER_LOGICAL, PUSH_CLIENT, self.notification(meter, invoke_id)))
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def with_cipher(options: FleetOptions, on: bool) -> FleetOptions:
    return replace(options, secrets=replace(options.secrets, cipher=on))
