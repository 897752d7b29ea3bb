"""One Modbus TCP connection per endpoint: the only module in drivers/ that imports pymodbus.

pymodbus is told not to retry and not to reconnect (retries=0, reconnect_delay=0): this module
owns the timeout, the reconnect backoff and the mapping of pymodbus' three failure shapes
(an exception raised, a missing result, an exception response) into `DriverError` subclasses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from gateway.backoff import Backoff
from gateway.errors import ConnectionFailed, DecodeError, MeterTimeout, ModbusExceptionResponse
from gateway.model.profiles import Function

log = logging.getLogger(__name__)

_FRAMERS = {"socket": FramerType.SOCKET, "rtu": FramerType.RTU}
#: pymodbus closes a connection after this many unanswered requests in a row; we decide that
#: ourselves (see `drop_after_timeouts`), because one dead unit behind a TCP gateway must not
#: cut the healthy units off.
_NEVER = 1 << 30


@dataclass(frozen=True, slots=True)
class ModbusEndpoint:
    """A Modbus TCP server or TCP-to-serial gateway: one connection, one bus lock."""

    name: str
    host: str
    port: int = 502
    framer: str = "socket"  # "socket" (Modbus TCP) | "rtu" (RTU over TCP)
    timeout: float = 1.0  # per request
    pause: float = 0.0  # pause after each request on this bus (serial gateways)

    def __post_init__(self) -> None:
        if self.framer not in _FRAMERS:
            msg = f"endpoint {self.name}: framer {self.framer!r} unknown (known: {', '.join(_FRAMERS)})"
            raise ValueError(msg)
        if not 0 < self.port < 65536 or self.timeout <= 0 or self.pause < 0:
            msg = f"endpoint {self.name}: need 0 < port < 65536, timeout > 0, pause >= 0"
            raise ValueError(msg)


def describe_read(function: Function, address: int, count: int) -> str:
    """'read input 0x0000×14' — how messages name a request."""
    return f"read {function.value} {address:#06x}×{count}"


class ModbusConnection:
    """Serialised register reads on one endpoint, connecting lazily and again after a failure.

    While the endpoint is down, reads fail fast with `ConnectionFailed` until the backoff
    delay has passed; the next read then tries to connect. Use as an async context manager
    (or call `close()`): leaving it closes the socket.
    """

    def __init__(
        self, endpoint: ModbusEndpoint, *, backoff: Backoff | None = None, drop_after_timeouts: int = 3,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._drop_after = drop_after_timeouts
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None
        self._next_attempt = 0.0  # monotonic time before which we do not try to connect
        self._silent = 0  # unanswered requests in a row on this connection
        self.connects = 0  # successful connects, for diagnostics

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket, if open. A later read connects again."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._silent = 0

    def where(self, unit: int) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port} unit {unit}"

    async def read(
        self, unit: int, function: Function, address: int, count: int, *, meter_id: str | None = None
    ) -> tuple[int, ...]:
        """Read `count` registers; raise MeterTimeout, ConnectionFailed, ModbusExceptionResponse or DecodeError."""
        words, _ = await self.read_timed(unit, function, address, count, meter_id=meter_id)
        return words

    async def read_timed(
        self, unit: int, function: Function, address: int, count: int, *, meter_id: str | None = None
    ) -> tuple[tuple[int, ...], float]:
        """Like `read`, also returning the seconds spent on the wire (without waiting for the bus)."""
        async with self._lock:
            client = await self._ensure_connected(unit, meter_id)
            started = self._monotonic()
            try:
                return await self._request(client, unit, function, address, count, meter_id), (
                    self._monotonic() - started
                )
            finally:
                if self.endpoint.pause:
                    await asyncio.sleep(self.endpoint.pause)

    async def _ensure_connected(self, unit: int, meter_id: str | None) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        wait = self._next_attempt - self._monotonic()
        if wait > 0:
            msg = f"not connected; next connect attempt in {wait:.1f} s"
            raise ConnectionFailed(meter_id, self.where(unit), msg)
        ep = self.endpoint
        # A fresh client per connection: no stale receive buffer or transaction state survives.
        client = AsyncModbusTcpClient(
            ep.host, port=ep.port, framer=_FRAMERS[ep.framer], name=ep.name,
            timeout=ep.timeout, retries=0, reconnect_delay=0, reconnect_delay_max=0,
        )
        client.set_max_no_responses(_NEVER)
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:  # pymodbus reports most failures as False
            ok, why = False, str(exc)
        else:
            why = "refused or timed out"
        if not ok:
            client.close()
            delay = self._backoff.next()
            self._next_attempt = self._monotonic() + delay
            msg = f"connect to {ep.host}:{ep.port} failed ({why}); retry in {delay:.1f} s"
            raise ConnectionFailed(meter_id, self.where(unit), msg)
        if self.connects:
            log.info("endpoint %s (%s:%s): reconnected", ep.name, ep.host, ep.port)
        self.connects += 1
        self._backoff.reset()
        self._client = client
        return client

    async def _request(
        self, client: AsyncModbusTcpClient, unit: int, function: Function, address: int, count: int,
        meter_id: str | None,
    ) -> tuple[int, ...]:
        what = describe_read(function, address, count)
        where = self.where(unit)
        call = client.read_holding_registers if function is Function.HOLDING else client.read_input_registers
        try:
            # pymodbus times the request out itself; ours is a safety net should it hang.
            async with asyncio.timeout(self.endpoint.timeout * 2 + 1):
                result = await call(address, count=count, device_id=unit)
        except (TimeoutError, ModbusIOException) as exc:
            if not client.connected or (isinstance(exc, ModbusIOException) and "No response" not in str(exc)):
                self.close()
                msg = f"{what}: connection lost ({exc})"
                raise ConnectionFailed(meter_id, where, msg) from exc
            self._silent += 1
            if self._silent >= self._drop_after:
                # Every unit on this connection is silent: a half-open socket looks like this.
                log.info("endpoint %s: %d unanswered requests in a row, reconnecting", self.endpoint.name,
                         self._silent)
                self.close()
            msg = f"{what} timed out after {self.endpoint.timeout:g} s"
            raise MeterTimeout(meter_id, where, msg) from exc
        except (ConnectionException, OSError) as exc:
            self.close()
            msg = f"{what}: connection failed ({exc})"
            raise ConnectionFailed(meter_id, where, msg) from exc
        except ModbusException as exc:
            self.close()
            msg = f"{what}: {exc}"
            raise ConnectionFailed(meter_id, where, msg) from exc
        except Exception as exc:
            # pymodbus is a boundary we do not control: a surprise there is still one meter's
            # failed read, not a reason to stop the fleet. Logged in full so it gets fixed.
            log.exception("endpoint %s: unexpected error from pymodbus on %s", self.endpoint.name, what)
            self.close()
            msg = f"{what}: unexpected {type(exc).__name__}: {exc}"
            raise ConnectionFailed(meter_id, where, msg) from exc
        self._silent = 0
        if result is None:
            msg = f"{what}: no response object"
            raise MeterTimeout(meter_id, where, msg)
        if result.isError():
            code = int(getattr(result, "exception_code", 0))
            raise ModbusExceptionResponse(meter_id, f"{where}, {what}", code)
        words = tuple(int(w) for w in result.registers)
        if len(words) != count:
            raise DecodeError(meter_id, where, address, words, f"{what}: got {len(words)} registers")
        return words
