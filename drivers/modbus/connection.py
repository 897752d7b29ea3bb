"""One Modbus connection per endpoint (TCP, RTU over TCP, serial RTU): with its response
classes (`drivers.modbus.responses`), the only module in drivers/ that imports pymodbus.

pymodbus is told not to retry and not to reconnect (retries=0, reconnect_delay=0): this module
owns the timeout (one watchdog timer per connection, not one per request), the retries with
backoff, the reconnect backoff and the mapping of pymodbus' three failure shapes (an exception
raised, a missing result, an exception response) into `DriverError` subclasses. One lock per
endpoint: a bus answers one request at a time. A poll holds it for all its reads
(`read_blocks`), so the meters queued on a busy endpoint wait for it once per poll, not once
per read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from drivers.modbus.plan import ReadBlock
from drivers.modbus.responses import register_fast_responses
from drivers.polling.buslock import HEALTHY, RETRY, BusLock
from drivers.polling.watchdog import RequestWatchdog
from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, DecodeError, DriverError, MeterTimeout, ModbusExceptionResponse
from gateway.model.profiles import Function

log = logging.getLogger(__name__)

Transport = Literal["tcp", "rtu_tcp", "serial"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "rtu_tcp", "serial")
#: The framer names of the first configuration format, still accepted.
LEGACY_FRAMERS: dict[str, Transport] = {"socket": "tcp", "rtu": "rtu_tcp"}
#: pymodbus closes a connection after this many unanswered requests in a row; we decide that
#: ourselves (see `drop_after_timeouts`), because one dead unit behind a TCP gateway must not
#: cut the healthy units off.
_NEVER = 1 << 30
#: Exception codes worth asking again: the device or the gateway's target was busy or slow.
_RETRY_CODES = frozenset({5, 6, 11})

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


@dataclass(frozen=True, slots=True)
class SerialLine:
    """An RS-485 / RS-232 line on this machine."""

    device: str  # e.g. /dev/ttyUSB0
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


@dataclass(frozen=True, slots=True)
class ModbusEndpoint:
    """A Modbus TCP server, a TCP-to-RS-485 gateway or a local serial line: one connection, one lock.

    `framer` is the older spelling of `transport` ("socket" = tcp, "rtu" = rtu_tcp).
    `late_reply_grace`: after a timeout on RTU framing (no transaction ids), the bus stays
    quiet this long so that a late answer is dropped instead of being taken for the answer
    to the next request; None means half the timeout on RTU framing and 0 on Modbus TCP.
    """

    name: str
    host: str = ""
    port: int = 502
    framer: str | None = None
    timeout: float = 1.0  # per request
    pause: float = 0.0  # quiet time after each request on this bus (slow serial gateways)
    transport: Transport | None = None
    serial: SerialLine | None = None
    retries: int = 1  # further attempts of a request that timed out or found the device busy
    retry_delay: float = 0.05  # first retry delay; doubles, with jitter
    late_reply_grace: float | None = None
    #: How many blocks a poll may span a hole of; None: each profile's own `max_gap`.
    max_gap: int | None = None
    #: Registers one read may span on this bus; None: each profile's own `max_registers_per_request`.
    max_registers: int | None = None
    _resolved: Transport = field(init=False, repr=False, default="tcp")

    def __post_init__(self) -> None:
        transport = self.transport
        if self.framer is not None:
            if self.framer not in LEGACY_FRAMERS:
                msg = f"endpoint {self.name}: framer {self.framer!r} unknown (known: {', '.join(LEGACY_FRAMERS)})"
                raise ValueError(msg)
            if transport is not None and transport != LEGACY_FRAMERS[self.framer]:
                msg = f"endpoint {self.name}: framer {self.framer!r} contradicts transport {transport!r}"
                raise ValueError(msg)
            transport = LEGACY_FRAMERS[self.framer]
        transport = transport or "tcp"
        if transport not in TRANSPORTS:
            msg = f"endpoint {self.name}: transport {transport!r} unknown (known: {', '.join(TRANSPORTS)})"
            raise ValueError(msg)
        object.__setattr__(self, "_resolved", transport)
        if transport == "serial" and self.serial is None:
            msg = f"endpoint {self.name}: transport 'serial' needs a serial line (device, baudrate, ...)"
            raise ValueError(msg)
        if transport != "serial" and (not self.host or not 0 < self.port < 65536):
            msg = f"endpoint {self.name}: transport {transport!r} needs a host and 0 < port < 65536"
            raise ValueError(msg)
        if self.timeout <= 0 or self.pause < 0 or self.retries < 0 or self.retry_delay <= 0:
            msg = f"endpoint {self.name}: need timeout > 0, pause >= 0, retries >= 0, retry_delay > 0"
            raise ValueError(msg)
        if (self.late_reply_grace is not None and self.late_reply_grace < 0) or (
            (self.max_gap is not None and self.max_gap < 0) or (self.max_registers is not None and self.max_registers < 1)
        ):
            msg = f"endpoint {self.name}: late_reply_grace and max_gap must be >= 0, max_registers >= 1"
            raise ValueError(msg)

    @property
    def kind(self) -> Transport:
        """The transport, with the legacy `framer` resolved."""
        return self._resolved

    @property
    def rtu_framing(self) -> bool:
        """RTU frames carry no transaction id: a late answer can be mistaken for the next one."""
        return self._resolved != "tcp"

    @property
    def grace(self) -> float:
        if self.late_reply_grace is not None:
            return self.late_reply_grace
        return self.timeout / 2 if self.rtu_framing else 0.0

    @property
    def address(self) -> str:
        """Where the endpoint is: host:port, or the serial device."""
        if self._resolved == "serial":
            assert self.serial is not None
            return self.serial.device
        return f"{self.host}:{self.port}"


def describe_read(function: Function, address: int, count: int) -> str:
    """'read input 0x0000×14' — how messages name a request."""
    return f"read {function.value} {address:#06x}×{count}"


class _QuietPymodbus(logging.Filter):
    """pymodbus logs every unanswered request at ERROR; this driver turns each into a typed
    error and logs once per meter state change, so pymodbus' own lines go to debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_pymodbus() -> None:
    """Demote pymodbus' log lines to debug (idempotent)."""
    logger = logging.getLogger("pymodbus.logging")
    if not any(isinstance(f, _QuietPymodbus) for f in logger.filters):
        logger.addFilter(_QuietPymodbus())


@dataclass(slots=True)
class ConnectionStats:
    """Counters of one endpoint's connection, for diagnostics."""

    connects: int = 0
    requests: int = 0
    timeouts: int = 0
    retries: int = 0
    drops: int = 0  # connections closed after a failure


class ModbusConnection:
    """Serialised register reads on one endpoint, connecting lazily and again after a failure.

    While the endpoint is down, reads fail fast with `ConnectionFailed` until the backoff
    delay has passed; the next read then tries to connect. Use as an async context manager
    (or call `close()`): leaving it closes the socket or serial port.
    """

    def __init__(
        self, endpoint: ModbusEndpoint, *, backoff: Backoff | None = None, drop_after_timeouts: int = 3,
        monotonic: Callable[[], float] = time.monotonic, bus: BusLock | None = None,
    ) -> None:
        quiet_pymodbus()
        self.endpoint = endpoint
        self._backoff = backoff or Backoff(0.5, 30.0)
        # A serial port has no half-open state to clear by reopening it.
        self._drop_after = drop_after_timeouts if endpoint.kind != "serial" else _NEVER
        self._monotonic = monotonic
        self._lock = bus or BusLock()
        self._client: Client | None = None
        self._next_attempt = 0.0  # monotonic time before which we do not try to connect
        self._silent = 0  # unanswered requests in a row on this connection
        # The request timeout, once pymodbus hands it over (`_take_request_timeouts`); until
        # then a safety net behind pymodbus' own.
        self._watchdog = RequestWatchdog(endpoint.timeout * 2 + 1)
        self.stats = ConnectionStats()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def connects(self) -> int:
        """Successful connects so far."""
        return self.stats.connects

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket or port, if open. A later read connects again."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._silent = 0
        self._watchdog.close()

    def where(self, unit: int) -> str:
        return f"{self.endpoint.address} unit {unit}"

    async def read(
        self, unit: int, function: Function, address: int, count: int, *, meter_id: str | None = None
    ) -> tuple[int, ...]:
        """Read `count` registers; raise MeterTimeout, ConnectionFailed, ModbusExceptionResponse or DecodeError."""
        words, _ = await self.read_timed(unit, function, address, count, meter_id=meter_id)
        return words

    async def read_timed(
        self, unit: int, function: Function, address: int, count: int, *, meter_id: str | None = None
    ) -> tuple[tuple[int, ...], float]:
        """Like `read`, also returning the seconds spent on the wire (without waiting for the bus).

        A timeout or a busy answer is retried `endpoint.retries` times after a jittered,
        doubling delay; the bus is free for other units while this one waits.
        """
        (words,), spent = await self.read_blocks(unit, (ReadBlock(function, address, count, ()),), meter_id=meter_id)
        return words, spent

    async def read_blocks(
        self, unit: int, blocks: Sequence[ReadBlock], *, meter_id: str | None = None, priority: int = HEALTHY
    ) -> tuple[list[tuple[int, ...]], float]:
        """Read `blocks` of one unit in order, holding the bus once for all of them (one poll);
        return the words of each and the seconds spent on the wire. The first failure ends it.

        Each read is retried as `read_timed` says; while a read waits to be retried, the bus is
        released for other units, and the poll takes it again to go on where it stopped, after
        every other waiting poll (`RETRY`). `priority` orders the first hold among the waiters
        (drivers/polling/buslock.py): a failing meter's poll waits for the healthy ones.
        """
        out: list[tuple[int, ...]] = []
        on_wire = 0.0
        attempt = 0
        backoff: Backoff | None = None
        while True:
            try:
                async with self._lock.hold(priority if attempt == 0 and not out else RETRY):
                    for block in blocks[len(out):]:
                        words, spent = await self._attempt(unit, block.function, block.address, block.count,
                                                           meter_id)
                        out.append(words)
                        on_wire += spent
                        attempt, backoff = 0, None  # the next read has retries of its own
                    return out, on_wire
            except (MeterTimeout, ModbusExceptionResponse) as err:
                if attempt >= self.endpoint.retries or not _retryable(err):
                    raise
            attempt += 1
            self.stats.retries += 1
            backoff = backoff or Backoff(self.endpoint.retry_delay, self.endpoint.retry_delay * 16, jitter=0.25)
            await asyncio.sleep(backoff.next())

    async def _attempt(
        self, unit: int, function: Function, address: int, count: int, meter_id: str | None
    ) -> tuple[tuple[int, ...], float]:
        client = self._client
        if client is None or not client.connected:
            client = await self._ensure_connected(unit, meter_id)
        started = self._monotonic()
        try:
            words = await self._request(client, unit, function, address, count, meter_id)
            return words, self._monotonic() - started
        except MeterTimeout:
            if self.endpoint.grace and self._client is not None:
                # Keep the bus quiet: a late answer now arrives with no request outstanding
                # and is dropped, instead of being read as the answer to the next request.
                await asyncio.sleep(self.endpoint.grace)
            raise
        finally:
            if self.endpoint.pause:
                await asyncio.sleep(self.endpoint.pause)

    def _make_client(self) -> Client:
        ep = self.endpoint
        # A fresh client per connection: no stale receive buffer or transaction state survives.
        if ep.kind == "serial":
            line = ep.serial
            assert line is not None
            return AsyncModbusSerialClient(
                line.device, framer=FramerType.RTU, baudrate=line.baudrate, bytesize=line.bytesize,
                parity=line.parity, stopbits=line.stopbits, name=ep.name, timeout=ep.timeout, retries=0,
                reconnect_delay=0, reconnect_delay_max=0,
            )
        framer = FramerType.SOCKET if ep.kind == "tcp" else FramerType.RTU
        return AsyncModbusTcpClient(
            ep.host, port=ep.port, framer=framer, name=ep.name,
            timeout=ep.timeout, retries=0, reconnect_delay=0, reconnect_delay_max=0,
        )

    async def _ensure_connected(self, unit: int, meter_id: str | None) -> Client:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        wait = self._next_attempt - self._monotonic()
        if wait > 0:
            msg = f"not connected; next connect attempt in {wait:.1f} s"
            raise ConnectionFailed(meter_id, self.where(unit), msg)
        ep = self.endpoint
        client = self._make_client()
        client.set_max_no_responses(_NEVER)
        register_fast_responses(client)
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:  # pymodbus reports most failures as False
            ok, why = False, str(exc)
        else:
            why = "refused or timed out" if ep.kind != "serial" else "cannot open the port"
        if not ok:
            client.close()
            delay = self._backoff.next()
            self._next_attempt = self._monotonic() + delay
            msg = f"connect to {ep.address} failed ({why}); retry in {delay:.1f} s"
            raise ConnectionFailed(meter_id, self.where(unit), msg)
        self._watchdog.limit = ep.timeout if _take_request_timeouts(client) else ep.timeout * 2 + 1
        if self.stats.connects:
            log.info("endpoint %s (%s): reconnected", ep.name, ep.address)
        self.stats.connects += 1
        self._backoff.reset()
        self._client = client
        return client

    def _drop(self) -> None:
        self.stats.drops += 1
        self.close()

    async def _request(
        self, client: Client, unit: int, function: Function, address: int, count: int, meter_id: str | None,
    ) -> tuple[int, ...]:
        # The names of the request and the unit are formatted only for an error: this runs
        # twice per poll of every meter.
        call = client.read_holding_registers if function is Function.HOLDING else client.read_input_registers
        self.stats.requests += 1
        try:
            with self._watchdog:  # the request's time limit (see `_take_request_timeouts`)
                result = await call(address, count=count, device_id=unit)
        except (TimeoutError, ModbusIOException) as exc:
            what, where = describe_read(function, address, count), self.where(unit)
            if not client.connected or (isinstance(exc, ModbusIOException) and "No response" not in str(exc)):
                self._drop()
                msg = f"{what}: connection lost ({exc})"
                raise ConnectionFailed(meter_id, where, msg) from exc
            self.stats.timeouts += 1
            self._silent += 1
            if self._silent >= self._drop_after:
                # Every unit on this connection is silent: a half-open socket looks like this.
                log.info("endpoint %s: %d unanswered requests in a row, reconnecting", self.endpoint.name,
                         self._silent)
                self._drop()
            msg = f"{what} timed out after {self.endpoint.timeout:g} s"
            raise MeterTimeout(meter_id, where, msg) from exc
        except (ConnectionException, OSError) as exc:
            self._drop()
            msg = f"{describe_read(function, address, count)}: connection failed ({exc})"
            raise ConnectionFailed(meter_id, self.where(unit), msg) from exc
        except ModbusException as exc:
            self._drop()
            msg = f"{describe_read(function, address, count)}: {exc}"
            raise ConnectionFailed(meter_id, self.where(unit), msg) from exc
        except Exception as exc:
            # pymodbus is a boundary we do not control: a surprise there is still one meter's
            # failed read, not a reason to stop the fleet. Logged in full so it gets fixed.
            what = describe_read(function, address, count)
            log.exception("endpoint %s: unexpected error from pymodbus on %s", self.endpoint.name, what)
            self._drop()
            msg = f"{what}: unexpected {type(exc).__name__}: {exc}"
            raise ConnectionFailed(meter_id, self.where(unit), msg) from exc
        self._silent = 0
        if result is None:
            msg = f"{describe_read(function, address, count)}: no response object"
            raise MeterTimeout(meter_id, self.where(unit), msg)
        if result.isError():
            code = int(getattr(result, "exception_code", 0))
            raise ModbusExceptionResponse(meter_id, f"{self.where(unit)}, {describe_read(function, address, count)}",
                                          code)
        # A tuple of ints already (drivers.modbus.responses): tuple() then hands it back as is.
        words = tuple(result.registers)
        if len(words) != count:
            what = describe_read(function, address, count)
            raise DecodeError(meter_id, self.where(unit), address, words, f"{what}: got {len(words)} registers")
        return words


def _take_request_timeouts(client: Client) -> bool:
    """Have pymodbus wait for answers without a time limit of its own, for the connection's
    watchdog to time them out; False if this pymodbus has no such setting (then its own limit
    stays, and the watchdog is only a safety net behind it).

    pymodbus (3.16) waits for each answer with `asyncio.wait_for(future, timeout)`, which on
    Python 3.11 costs a timer, a second future and two callbacks per request; with no timeout
    it awaits the future alone. The setting is the transaction manager's copy of the connect
    timeout, read for nothing else once connected (a fresh client connects each time)."""
    params = getattr(getattr(client, "ctx", None), "comm_params", None)
    if params is None or not hasattr(params, "timeout_connect"):
        return False
    params.timeout_connect = None
    return True


def _retryable(err: DriverError) -> bool:
    if isinstance(err, ModbusExceptionResponse):
        return err.code in _RETRY_CODES
    return isinstance(err, MeterTimeout)
