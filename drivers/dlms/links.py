"""The byte links under a DLMS association, on asyncio streams (no blocking I/O in the loop):

- `WrapperLink`: TCP with the IEC 62056-47 wrapper (8-byte header: version 1, source wPort,
  destination wPort, length), usually port 4059;
- `HdlcLink`: HDLC (IEC 62056-46) over a byte stream: a TCP terminal server or a serial line
  (`open_serial`), with client and server HDLC addresses, SNRM/UA, LLC headers, segmented
  I-frames acknowledged by RR, DISC at the end. Frames and sequence numbers come from
  dlms-cosem's sans-io HdlcConnection; the reading of frames off the stream is ours, so a
  garbage frame or a bad checksum is a `FrameError` with the bytes, not a wait for more data.

A link carries whole APDUs: `exchange(apdu)` sends one and returns the one that answers it.
"""

from __future__ import annotations

import asyncio
import os
import termios
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dlms_cosem.hdlc import address as hdlc_address
from dlms_cosem.hdlc import connection as hdlc_connection
from dlms_cosem.hdlc import frames as hdlc_frames
from dlms_cosem.hdlc import state as hdlc_state
from dlms_cosem.hdlc.exceptions import HdlcException, LocalProtocolError

from drivers.dlms.errors import FrameError

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams]]

WRAPPER_VERSION = 1
#: The largest APDU a wrapper may carry (its length is 16 bits).
MAX_WRAPPED = 0xFFFF
_LLC_COMMAND = b"\xe6\xe6\x00"
_LLC_RESPONSE = b"\xe6\xe7\x00"
#: Seconds a close waits for the UA of its DISC (the link closes either way).
_DISC_WAIT = 1.0
#: I-frames of an answer a link accepts before it calls the answer runaway.
MAX_SEGMENTS = 4096


class Link(Protocol):
    @property
    def is_open(self) -> bool: ...
    async def open(self) -> None: ...
    async def exchange(self, apdu: bytes) -> bytes: ...
    async def close(self) -> None: ...


def tcp_opener(host: str, port: int) -> Opener:
    async def open_tcp() -> Streams:
        return await asyncio.open_connection(host, port)
    return open_tcp


@dataclass(frozen=True, slots=True)
class SerialLine:
    device: str
    baudrate: int = 9600


_BAUDS = {rate: getattr(termios, f"B{rate}") for rate in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600,
                                                           115200) if hasattr(termios, f"B{rate}")}


def serial_opener(line: SerialLine) -> Opener:
    """A serial line (or pty) in raw mode, 8N1, as asyncio streams over its non-blocking fd."""

    async def open_serial() -> Streams:
        fd = os.open(line.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            speed = _BAUDS.get(line.baudrate, termios.B9600)
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except OSError:
            os.close(fd)
            raise
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        read_file = os.fdopen(fd, "rb", buffering=0, closefd=True)
        write_file = os.fdopen(os.dup(fd), "wb", buffering=0, closefd=True)
        read_transport: asyncio.BaseTransport | None = None
        try:
            read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_file)
            transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, write_file)
        except BaseException:  # a cancel or timeout mid-open must not leak the line's descriptors
            if read_transport is not None:
                read_transport.close()
            read_file.close()
            write_file.close()
            raise
        return reader, _SerialWriter(transport, protocol, reader, loop, read_transport)

    return open_serial


class _SerialWriter(asyncio.StreamWriter):
    """The write side of a serial line; closing it closes the read side too (one device, two pipes)."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: asyncio.BaseProtocol,
                 reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop,
                 read_transport: asyncio.BaseTransport) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._read_transport = read_transport

    def close(self) -> None:
        self._read_transport.close()
        super().close()

    async def wait_closed(self) -> None:
        # A pipe's protocol has no close waiter (StreamWriter.wait_closed would raise): closing
        # a pipe transport is immediate, one loop turn is all it takes.
        await asyncio.sleep(0)


class _StreamLink:
    def __init__(self, opener: Opener, where: str, timeout: float) -> None:
        self._opener = opener
        self.where = where
        self.timeout = timeout
        self._streams: Streams | None = None

    @property
    def is_open(self) -> bool:
        return self._streams is not None

    async def _connect(self) -> Streams:
        async with asyncio.timeout(self.timeout):
            self._streams = await self._opener()
        return self._streams

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            try:
                async with asyncio.timeout(1.0):
                    await streams[1].wait_closed()
            except (OSError, TimeoutError):
                pass

    def _io(self) -> Streams:
        if self._streams is None:
            raise ConnectionError(f"{self.where}: not connected")
        return self._streams

    async def _read(self, n: int) -> bytes:
        reader = self._io()[0]
        try:
            data: bytes = await reader.readexactly(n)
            return data
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError(f"{self.where}: connection closed mid-frame after {len(exc.partial)} byte(s)") from None


class WrapperLink(_StreamLink):
    """One association's wrapper ports on a TCP connection."""

    def __init__(self, opener: Opener, where: str, client_wport: int, server_wport: int, timeout: float = 5.0) -> None:
        super().__init__(opener, where, timeout)
        self.client_wport = client_wport
        self.server_wport = server_wport

    async def open(self) -> None:
        await self._connect()

    async def exchange(self, apdu: bytes) -> bytes:
        if len(apdu) > MAX_WRAPPED:
            raise ValueError(f"APDU of {len(apdu)} bytes is longer than a wrapper carries")
        writer = self._io()[1]
        writer.write(wrap(self.client_wport, self.server_wport, apdu))
        async with asyncio.timeout(self.timeout):
            await writer.drain()
            header = await self._read(8)
            version, source, dest, length = unwrap_header(header)
            body = await self._read(length)
        if version != WRAPPER_VERSION or source != self.server_wport or dest != self.client_wport:
            raise FrameError(None, self.where, f"wrapper header version {version} from wPort {source} to {dest} "
                             f"(expected version 1 from {self.server_wport} to {self.client_wport})", header + body)
        return body


def wrap(source: int, dest: int, apdu: bytes) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in (WRAPPER_VERSION, source, dest, len(apdu))) + apdu


def unwrap_header(header: bytes) -> tuple[int, int, int, int]:
    """(version, source wPort, destination wPort, length) of an 8-byte wrapper header."""
    if len(header) != 8:
        raise FrameError(None, "wrapper", f"wrapper header of {len(header)} bytes", header)
    return tuple(int.from_bytes(header[i:i + 2], "big") for i in range(0, 8, 2))  # type: ignore[return-value]


class HdlcLink(_StreamLink):
    """One HDLC connection (SNRM ... DISC) to one server address on a stream."""

    def __init__(self, opener: Opener, where: str, client: int, server_logical: int, server_physical: int | None,
                 timeout: float = 5.0) -> None:
        super().__init__(opener, where, timeout)
        self.client = hdlc_address.HdlcAddress(logical_address=client, physical_address=None, address_type="client")
        self.server = hdlc_address.HdlcAddress(logical_address=server_logical, physical_address=server_physical,
                                               address_type="server")
        self._hdlc = hdlc_connection.HdlcConnection(self.server, self.client)

    async def open(self) -> None:
        await self._connect()
        self._hdlc = hdlc_connection.HdlcConnection(self.server, self.client)
        self._send(hdlc_frames.SetNormalResponseModeFrame(destination_address=self.server, source_address=self.client))
        await self._frame()

    async def close(self) -> None:
        try:
            if self.is_open and self._hdlc.state.current_state == hdlc_state.IDLE:
                self._send(hdlc_frames.DisconnectFrame(destination_address=self.server, source_address=self.client))
                async with asyncio.timeout(min(self.timeout, _DISC_WAIT)):
                    await self._frame()
        except (OSError, TimeoutError, FrameError, HdlcException, LocalProtocolError):
            pass  # closing anyway
        finally:  # a cancel during the DISC still closes the line
            await super().close()

    async def exchange(self, apdu: bytes) -> bytes:
        data = _LLC_COMMAND + apdu
        size = self._hdlc.max_data_size
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        for n, chunk in enumerate(chunks):
            segmented = n < len(chunks) - 1
            self._send(hdlc_frames.InformationFrame(
                destination_address=self.server, source_address=self.client, payload=chunk,
                send_sequence_number=self._hdlc.server_ssn, receive_sequence_number=self._hdlc.server_rsn,
                segmented=segmented, final=True))
            if segmented:
                await self._frame()  # the server's RR for this segment
        answer = bytearray()
        for _ in range(MAX_SEGMENTS):
            frame = await self._frame()
            if not isinstance(frame, hdlc_frames.InformationFrame):
                raise FrameError(None, self.where, f"expected an I-frame, got {type(frame).__name__}")
            answer += frame.payload or b""
            if not frame.segmented:
                break
            self._send(hdlc_frames.ReceiveReadyFrame(destination_address=self.server, source_address=self.client,
                                                     receive_sequence_number=self._hdlc.server_rsn))
        else:
            raise FrameError(None, self.where, f"answer longer than {MAX_SEGMENTS} segments")
        if not answer.startswith(_LLC_RESPONSE):
            raise FrameError(None, self.where, "answer without the LLC response header e6 e7 00", bytes(answer))
        return bytes(answer[3:])

    def _send(self, frame: object) -> None:
        try:
            data = self._hdlc.send(frame)
        except (HdlcException, LocalProtocolError) as exc:
            raise FrameError(None, self.where, f"HDLC state does not allow {type(frame).__name__}: {exc}") from None
        self._io()[1].write(data)

    async def _frame(self) -> object:
        """The next frame from the server, checked (flags, length, HCS, FCS) before the state machine sees it."""
        async with asyncio.timeout(self.timeout):
            await self._io()[1].drain()
            raw = await self._read_frame()
        # Parsed from the exact bytes the length field spans, not by dlms-cosem's flag search
        # (HDLC in DLMS does not stuff bytes: a 0x7e inside a segment is data).
        state = self._hdlc.state.current_state
        kinds: tuple[Any, ...] = ((hdlc_frames.UnNumberedAcknowledgmentFrame,)
                                  if state in (hdlc_state.AWAITING_CONNECTION, hdlc_state.AWAITING_DISCONNECT)
                                  else (hdlc_frames.InformationFrame, hdlc_frames.ReceiveReadyFrame))
        frame = None
        for kind in kinds:
            try:
                frame = kind.from_bytes(raw)
                break
            except (HdlcException, ValueError, IndexError):
                continue
        if frame is None:
            raise FrameError(None, self.where, "not a valid HDLC frame here (bad HCS/FCS or frame type)", raw)
        try:
            self._hdlc.state.process_frame(frame)
            if isinstance(frame, hdlc_frames.InformationFrame):
                self._hdlc.handle_sequence_numbers(frame_ssn=frame.send_sequence_number,
                                                   frame_rsn=frame.receive_sequence_number, response=True)
        except (HdlcException, LocalProtocolError, ValueError) as exc:
            raise FrameError(None, self.where, f"HDLC frame refused: {exc}", raw) from None
        return frame

    async def _read_frame(self) -> bytes:
        # Skip to an opening flag; a run of flags between frames is allowed.
        skipped = bytearray()
        while True:
            b = await self._read(1)
            if b == hdlc_frames.HDLC_FLAG:
                break
            skipped += b
            if len(skipped) > 2048:
                raise FrameError(None, self.where, "no HDLC flag in 2048 bytes", bytes(skipped))
        fmt = await self._read(2)
        while fmt[:1] == hdlc_frames.HDLC_FLAG:  # a closing flag of the frame before
            fmt = fmt[1:] + await self._read(1)
        if fmt[0] & 0xF0 != 0xA0:
            raise FrameError(None, self.where, f"HDLC format field {fmt.hex()} is not type 3", bytes(skipped) + fmt)
        length = ((fmt[0] & 0x07) << 8) | fmt[1]
        if length < 7:
            raise FrameError(None, self.where, f"HDLC frame length {length}", fmt)
        rest = await self._read(length - 2 + 1)
        frame = b"\x7e" + fmt + rest
        if not frame.endswith(hdlc_frames.HDLC_FLAG):
            raise FrameError(None, self.where, "HDLC frame does not end with a flag", frame)
        return frame


__all__ = ["HdlcLink", "Link", "SerialLine", "WrapperLink", "serial_opener", "tcp_opener", "unwrap_header", "wrap"]
