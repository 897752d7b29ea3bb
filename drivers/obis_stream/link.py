"""Opening a byte stream: a TCP connection (ser2net) or a serial device (a P1 cable, an optical head,
a pty in tests), both read through an asyncio StreamReader."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import serial

from drivers.obis_stream.settings import PortSection

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


def split_tcp(text: str) -> tuple[str, int]:
    """"host:port" -> (host, port); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        msg = f"{text!r} is not host:port"
        raise ValueError(msg)
    return host.strip("[]"), int(port)


@dataclass(slots=True)
class Link:
    reader: asyncio.StreamReader
    close: Callable[[], None]


async def open_link(port: PortSection, line: tuple[int, int, str, int], timeout: float = 10.0) -> Link:
    """The port opened for reading; OSError (or TimeoutError) when it cannot be."""
    if port.tcp:
        host, number = split_tcp(port.tcp)
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, number)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return Link(reader, writer.close)
    baud, bytesize, parity, stopbits = line
    try:
        ser = serial.Serial(port.device, baudrate=port.baudrate or baud, bytesize=port.bytesize or bytesize,
                            parity=_PARITY[port.parity or parity], stopbits=port.stopbits or stopbits, timeout=0)
    except serial.SerialException as exc:
        raise OSError(str(exc)) from exc
    # A tty is a character device: asyncio reads it as a pipe, without a thread.
    pipe = os.fdopen(os.dup(ser.fileno()), "rb", buffering=0)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except BaseException:
        pipe.close()
        ser.close()
        raise

    def close() -> None:
        transport.close()
        ser.close()

    return Link(reader, close)


__all__ = ["Link", "open_link", "split_tcp"]
