"""Serving simulated telegrams (P1, SML) on a TCP port, as ser2net serves a meter's serial port, or
writing them into a serial device (one end of a socat pty pair).

`source()` gives the next telegram's bytes (b"" for one not sent); every `interval` seconds each
connected client gets it, so a client that connects mid-stream starts at the next telegram.

    python -m simulators.stream p1 --meters 3 --port 2001 --interval 1 --bad-crc-every 10
    python -m simulators.stream sml --port 2101 --exchange-at 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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
            # A source that raised has ended the ticks already: still close every client below.
            with contextlib.suppress(asyncio.CancelledError, Exception):
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


def _every(n: int | None, limit: int = 1_000_000) -> frozenset[int]:
    return frozenset(range(n, limit, n)) if n else frozenset()


async def _serve(args: argparse.Namespace) -> None:
    from simulators.p1.meter import Faults, SimP1Meter
    from simulators.sml.meter import SimSmlMeter

    faults = Faults(bad_crc=_every(args.bad_crc_every), missing=_every(args.missing_every),
                    garbage=_every(args.garbage_every), truncated=_every(args.truncated_every),
                    exchange=frozenset({args.exchange_at}) if args.exchange_at else frozenset())
    async with contextlib.AsyncExitStack() as stack:
        for i in range(args.meters):
            if args.protocol == "p1":
                meter = SimP1Meter(equipment=f"E{i:016d}", faults=faults,
                                   clock=datetime.now(UTC).replace(microsecond=0), step=timedelta(seconds=args.interval))
                source: Source = meter.telegram
            else:
                source = SimSmlMeter(faults=faults).frame
            port = args.port + i if args.port else 0
            server = await stack.enter_async_context(TelegramServer(source, args.interval, args.host, port))
            print(f"{args.protocol} meter {i + 1}: tcp {server.address}", flush=True)
        print("ready; Ctrl-C stops", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """`python -m simulators.stream p1|sml`: meters on consecutive TCP ports, with faults."""
    parser = argparse.ArgumentParser(prog="python -m simulators.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=("p1", "sml"))
    parser.add_argument("--meters", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="first TCP port (the next meters take the next ones); 0: any")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between telegrams (DSMR 5: 1, DSMR 4: 10)")
    for fault in ("bad-crc", "missing", "garbage", "truncated"):
        parser.add_argument(f"--{fault}-every", type=int, default=None, metavar="N", help=f"every Nth telegram: {fault}")
    parser.add_argument("--exchange-at", type=int, default=None, metavar="N",
                        help="replace the meter before telegram N (registers restart near zero, new id)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()


__all__ = ["TelegramServer", "main", "write_serial"]
