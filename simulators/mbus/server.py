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

#: Bits per character on the M-Bus wire: start, 8 data, even parity, stop.
BITS_PER_BYTE = 11


def wire_time(n_bytes: int, baud: int) -> float:
    """Seconds `n_bytes` take on an M-Bus line at `baud` (11 bits a character)."""
    return n_bytes * BITS_PER_BYTE / baud


async def serve_tcp(bus: Bus, host: str = "127.0.0.1", port: int = 0, baud: int | None = None) -> asyncio.Server:
    """Serve `bus` on TCP; the caller closes the server. Port 0: the OS picks (server.sockets).
    `baud`: each exchange takes the time its request and answer would take on a line at that
    speed (a converter in front of a 2400 baud bus), so benchmarks see the bus's own limit."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        try:
            while chunk := await reader.read(4096):
                buf += chunk
                for request in split(buf):
                    answer = bus.handle(request)
                    if baud:
                        await asyncio.sleep(wire_time(request.size + len(answer), baud))
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


__all__ = ["BITS_PER_BYTE", "serve_pty", "serve_tcp", "wire_time"]
