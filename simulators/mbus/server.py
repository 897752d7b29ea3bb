"""An M-Bus line of simulated slaves served on a TCP port (an M-Bus-to-Ethernet converter) or on
one end of a pseudo-terminal pair (socat), as a level converter's serial line would be."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty

from simulators.mbus.slave import Bus
from simulators.mbus.wire import split


async def serve_tcp(bus: Bus, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Serve `bus` on TCP; the caller closes the server. Port 0: the OS picks (server.sockets)."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        try:
            while chunk := await reader.read(4096):
                buf += chunk
                for request in split(buf):
                    answer = bus.handle(request)
                    if answer:
                        writer.write(answer)
                        await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(client, host, port)


async def serve_pty(bus: Bus, path: str) -> None:
    """Serve `bus` on the serial device `path` (a pty end) until cancelled."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    with contextlib.suppress(termios.error):
        tty.setraw(fd)
    loop = asyncio.get_running_loop()
    buf = bytearray()
    ready = asyncio.Event()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            buf.extend(os.read(fd, 4096))
        ready.set()

    loop.add_reader(fd, readable)
    try:
        while True:
            await ready.wait()
            ready.clear()
            for request in split(buf):
                answer = bus.handle(request)
                if answer:
                    os.write(fd, answer)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


__all__ = ["serve_pty", "serve_tcp"]
