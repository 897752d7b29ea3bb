"""The core's control socket: how the API process (and the supervisor) ask the running core.

`meter-gateway run` runs the core (drivers, pipeline, spool, forwarder, store writer) and the API
in processes of their own (gateway.runtime.processes). The API reads the store itself; what only
the core knows (diagnostics, status, readiness, metrics, poll-now, raw reads, PAYG commands) it
asks here: a unix socket, 0600, in a directory only the gateway's user can enter (the supervisor's
private runtime directory; `control.sock` in the data directory when run by hand), one call per
connection.

The wire is pickle, length-prefixed: both ends are this program, the socket admits only the
gateway's own user, and the answers are the very dataclasses and errors the in-process gateway
returns, so the API's routes cannot tell the difference. Errors cross as (type, args, attributes),
rebuilt without calling their __init__ (several take other arguments than their message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The socket's name in the data directory.
SOCKET_NAME = "control.sock"
_HEADER = struct.Struct("!I")
#: The largest frame either side accepts (a fleet of 10,000 meters' summaries is ~5 MB).
MAX_FRAME = 64 * 1024 * 1024


class CallFailed(Exception):
    """The core raised something that does not cross the socket (its message is kept)."""


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
    if size > MAX_FRAME:
        msg = f"control frame of {size} bytes refused (at most {MAX_FRAME})"
        raise ConnectionError(msg)
    return pickle.loads(await reader.readexactly(size))


def _frame(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def _error_frame(exc: BaseException) -> bytes:
    try:
        attrs = dict(getattr(exc, "__dict__", {}))
        return _frame(("err", type(exc), exc.args, attrs))
    except (pickle.PicklingError, TypeError, AttributeError):
        return _frame(("err", CallFailed, (f"{type(exc).__name__}: {exc}",), {}))


def rebuild_error(kind: type[BaseException], args: tuple[Any, ...], attrs: Mapping[str, Any]) -> BaseException:
    """The error the core raised, as the same type with the same message and attributes."""
    exc = kind.__new__(kind, *args)
    exc.args = args
    with contextlib.suppress(AttributeError, TypeError):
        exc.__dict__.update(attrs)
    return exc


class ControlServer:
    """Serves `handlers` (name -> sync or async callable) on a unix socket at `path`."""

    def __init__(self, path: Path, handlers: Mapping[str, Callable[..., Any]]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)  # left by a core that was killed
        old = os.umask(0o177)  # created 0600, never a moment wider
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            name, args, kwargs = await _read_frame(reader)
            handler = self.handlers.get(name)
            try:
                if handler is None:
                    raise CallFailed(f"the core has no call {name!r}")
                result = handler(*args, **kwargs)
                if isinstance(result, Awaitable):
                    result = await result
                reply = _frame(("ok", result))
            except Exception as exc:  # the caller gets it, as the in-process gateway would raise it
                reply = _error_frame(exc)
            writer.write(reply)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, pickle.UnpicklingError, ValueError) as exc:
            log.debug("control connection dropped: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class CoreClient:
    """Calls on the core's control socket. OSError (ConnectionRefused, FileNotFound) when the core
    is not there; the core's own error, rebuilt, when the call raised."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout

    async def call(self, name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            reader, writer = await asyncio.open_unix_connection(str(self.path))
            try:
                writer.write(_frame((name, args, kwargs)))
                await writer.drain()
                try:
                    reply = await _read_frame(reader)
                except asyncio.IncompleteReadError as exc:
                    raise ConnectionResetError("the core closed the control connection without answering") from exc
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
        if reply[0] == "ok":
            return reply[1]
        raise rebuild_error(reply[1], reply[2], reply[3])


def control_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


__all__ = ["SOCKET_NAME", "CallFailed", "ControlServer", "CoreClient", "control_path", "rebuild_error"]
