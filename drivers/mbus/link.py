"""The byte pipe of an M-Bus master: a serial line (a level converter, 2400 8E1 by default) or a
TCP connection to an M-Bus-to-Ethernet converter. Both read whole frames with a deadline.

The serial line is opened and set up with pyserial and read through the event loop's reader on
its file descriptor (no thread, no busy wait); TCP is an asyncio stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import serial

from drivers.mbus.frame import FrameError, frame_length
from gateway.errors import ConnectionFailed, MeterTimeout

Transport = Literal["tcp", "serial"]


@dataclass(frozen=True, slots=True)
class LinkSettings:
    transport: Transport
    host: str = ""
    port: int = 10001
    serial_port: str = ""
    baudrate: int = 2400
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def address(self) -> str:
        return self.serial_port if self.transport == "serial" else f"{self.host}:{self.port}"


class Link:
    """One open line. `exchange` writes a frame and reads the answer within `timeout`."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self._buf = bytearray()
        self._data = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._serial: serial.Serial | None = None
        self._pump: asyncio.Task[None] | None = None
        self._eof = False

    @property
    def is_open(self) -> bool:
        return (self._serial is not None or self._writer is not None) and not self._eof

    async def open(self) -> None:
        s = self.settings
        try:
            if s.transport == "tcp":
                self._reader, self._writer = await asyncio.open_connection(s.host, s.port)
                self._pump = asyncio.get_running_loop().create_task(self._read_tcp())
            else:
                self._serial = serial.Serial(s.serial_port, s.baudrate, bytesize=s.bytesize, parity=s.parity,
                                             stopbits=s.stopbits, timeout=0, write_timeout=2)
                asyncio.get_running_loop().add_reader(self._serial.fileno(), self._read_serial)
        except (OSError, serial.SerialException) as exc:
            self.close()
            raise ConnectionFailed(None, s.address, f"cannot open: {exc}") from exc
        self._eof = False

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._serial.fileno())
            self._serial.close()
            self._serial = None
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._buf.clear()

    def _read_serial(self) -> None:
        assert self._serial is not None
        try:
            chunk = os.read(self._serial.fileno(), 4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._eof = True
        self._buf += chunk
        self._data.set()

    async def _read_tcp(self) -> None:
        assert self._reader is not None
        while True:
            chunk = await self._reader.read(4096)
            if not chunk:
                self._eof = True
                self._data.set()
                return
            self._buf += chunk
            self._data.set()

    async def write(self, frame: bytes) -> None:
        try:
            if self._serial is not None:
                await asyncio.to_thread(self._serial.write, frame)
            elif self._writer is not None:
                self._writer.write(frame)
                await self._writer.drain()
            else:
                raise ConnectionFailed(None, self.settings.address, "line is not open")
        except (OSError, serial.SerialException) as exc:
            self._eof = True
            raise ConnectionFailed(None, self.settings.address, f"write failed: {exc}") from exc

    def drain_input(self) -> bytes:
        """Whatever arrived unasked (late answers, noise): dropped before a request, returned for the log."""
        out = bytes(self._buf)
        self._buf.clear()
        self._data.clear()
        return out

    async def read_frame(self, timeout: float, where: str) -> bytes:
        """The next whole frame; MeterTimeout when none is complete in time, FrameError when the
        bytes start no frame (the line is then drained: what follows noise cannot be trusted)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                need = frame_length(bytes(self._buf[:4]))
            except FrameError as exc:
                garbage = self.drain_input()
                raise FrameError(where, exc.detail, garbage) from None
            if need is not None and len(self._buf) >= need:
                out = bytes(self._buf[:need])
                del self._buf[:need]
                return out
            if self._eof:
                raise ConnectionFailed(None, where, "the line closed")
            left = deadline - loop.time()
            if left <= 0:
                partial = self.drain_input()
                if partial:
                    raise FrameError(where, f"truncated frame: {len(partial)} byte(s) then silence", partial)
                raise MeterTimeout(None, where, f"no answer within {timeout:g} s")
            self._data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data.wait(), left)


__all__ = ["Link", "LinkSettings", "Transport"]
