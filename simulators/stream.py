"""Serving simulated telegrams (P1, SML) on a TCP port, as ser2net serves a meter's serial port, or
writing them into a serial device (one end of a socat pty pair).

`source()` gives the next telegram's bytes (b"" for one not sent); every `interval` seconds each
connected client gets it, so a client that connects mid-stream starts at the next telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

Source = Callable[[], bytes]


class TelegramServer:
    """A TCP server that writes `source()` to every client every `interval` seconds."""

    def __init__(self, source: Source, interval: float = 1.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.source, self.interval, self.host, self.port = source, interval, host, port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    async def __aenter__(self) -> TelegramServer:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for w in list(self._clients):
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def clients(self) -> int:
        return len(self._clients)

    def drop_clients(self) -> None:
        """Close every connection (a ser2net restart): readers must reconnect."""
        for w in list(self._clients):
            w.close()
        self._clients.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            await reader.read()  # P1/SML are one-way: wait for the client to go
        except OSError:
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self._clients:
                continue
            data = self.source()
            self.sent += 1
            for w in list(self._clients):
                if data:
                    w.write(data)
                    with contextlib.suppress(OSError):
                        await w.drain()


async def write_serial(device: str, source: Source, interval: float = 1.0, count: int | None = None) -> None:
    """Write `count` telegrams (None: until cancelled) into `device`, one per `interval` seconds."""
    fd = os.open(device, os.O_WRONLY | os.O_NOCTTY)
    try:
        n = 0
        while count is None or n < count:
            data = source()
            if data:
                os.write(fd, data)
            n += 1
            await asyncio.sleep(interval)
    finally:
        os.close(fd)


__all__ = ["TelegramServer", "write_serial"]
