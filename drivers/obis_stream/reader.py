"""The reading loop of one port: open it, cut the byte stream into telegrams, decode each into
RawObjects for the meter(s) on the port, and reopen with back-off when the link drops or falls
silent. A bad telegram (CRC, truncated, garbage, undecodable) is counted and dead-lettered with the
port, the meter and its bytes; it never stops the loop, and the next telegram is read as usual."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from drivers.base import DriverStatus, Emit, Observed
from drivers.obis_stream import p1, sml
from drivers.obis_stream.cipher import CipherFramer, decrypt
from drivers.obis_stream.link import Link, open_link
from drivers.obis_stream.p1 import Chunk
from drivers.obis_stream.settings import DSMR_LINE, SML_LINE, PortSection, StreamSection
from drivers.polling.health import MeterHealth
from gateway.backoff import Backoff
from gateway.model import DeadLetter, Event, EventKind, Severity
from gateway.model.samples import ObjectValue, RawObjects

log = logging.getLogger(__name__)

#: Bytes of a bad telegram a dead letter keeps (as text for P1, hex for SML).
KEEP = 1024

#: What a decoded telegram gives: per M-Bus channel (0: the meter itself), its time and values.
Readout = list[tuple[int, datetime | None, tuple[ObjectValue, ...]]]


class FrameError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Codec:
    """How one protocol frames and decodes, and how its bad bytes are shown."""

    protocol: str
    framer: Callable[[], p1.P1Framer | sml.SmlFramer | CipherFramer]
    decode: Callable[[bytes], Readout]
    show: Callable[[bytes], str]
    line: Callable[[PortSection], tuple[int, int, str, int]]


def _p1_decode(raw: bytes, require_crc: bool = False) -> Readout:
    try:
        t = p1.decode(raw, require_crc)
    except p1.P1Error as exc:
        raise FrameError(exc.reason, exc.detail) from None
    return [(0, t.ts, t.values), *((ch, when, values) for ch, when, values in t.mbus)]


def _sml_decode(raw: bytes) -> Readout:
    try:
        r = sml.decode(raw)
    except sml.SmlError as exc:
        raise FrameError(exc.reason, exc.detail) from None
    return [(0, r.ts, r.values)]


def _text(raw: bytes) -> str:
    return raw[:KEEP].decode("ascii", errors="backslashreplace")


def _hex(raw: bytes) -> str:
    return raw[:KEEP // 2].hex() + ("…" if len(raw) > KEEP // 2 else "")


P1 = Codec("p1", p1.P1Framer, _p1_decode, _text, lambda port: DSMR_LINE[port.dsmr])
SML = Codec("sml", sml.SmlFramer, _sml_decode, _hex, lambda port: SML_LINE)
#: The Luxembourg specification's authentication key (public; dsmr-parser's LUXEMBOURG_SMARTY too).
LUXEMBOURG_AUTH_KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


def p1_codec(port: PortSection, env: Mapping[str, str]) -> Codec:
    """P1 as the port's meter sends it: encrypted or plain; from DSMR 4 on, a CRC is required."""
    if port.encryption_key_env:
        return encrypted_p1(port, env)
    if port.dsmr in ("4", "5"):
        return Codec("p1", p1.P1Framer, lambda raw: _p1_decode(raw, require_crc=True), _text, P1.line)
    return P1


def encrypted_p1(port: PortSection, env: Mapping[str, str]) -> Codec:
    """P1 for a port whose meter encrypts: keys from `env` (by the port's variable names). A key
    that is missing or not hex makes every telegram a dead letter saying which variable to set."""
    problem = None
    key = auth = b""
    try:
        name = port.encryption_key_env or ""
        key = bytes.fromhex(env[name])
        auth = bytes.fromhex(env[port.authentication_key_env]) if port.authentication_key_env else LUXEMBOURG_AUTH_KEY
        if len(key) != 16 or len(auth) != 16:
            problem = f"the keys in {name}/{port.authentication_key_env or '(default)'} must be 32 hex digits"
    except KeyError as exc:
        problem = f"environment variable {exc.args[0]} is not set"
    except ValueError:
        problem = "the key is not hex"

    def decode(raw: bytes) -> Readout:
        if problem is not None:
            raise FrameError("decrypt", f"cannot decrypt: {problem}")
        try:
            plain = decrypt(raw, key, auth)
        except p1.P1Error as exc:
            raise FrameError(exc.reason, exc.detail) from None
        return _p1_decode(plain, require_crc=True)

    return Codec("p1", CipherFramer, decode, _hex, P1.line)


#: Where a telegram names its meter: DSMR's equipment id, SML's server id / device id.
ID_CODES = ("0-0:96.1.1", "0-0:96.1.0", "1-0:0.0.9", "1-0:96.1.0")


def identity(values: Sequence[ObjectValue]) -> str | None:
    return next((str(v) for code, v, _ in values if code in ID_CODES and str(v)), None)


def shown_id(sent: str) -> str:
    """DSMR 4+ writes the equipment id as hex of its ASCII: show the ASCII when it is that."""
    try:
        text = bytes.fromhex(sent).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return sent
    return text if text.isprintable() else sent


def same_device(sent: str, expected: str) -> bool:
    """As printed on the meter, spaces aside ("1 EMH00 1059 7059" is 1EMH0010597059)."""
    want = expected.replace(" ", "").casefold()
    return want in (sent.replace(" ", "").casefold(), shown_id(sent).replace(" ", "").casefold())


class StreamReader:
    """One port: a Driver (drivers/base.py) that pushes, so it has no poll health."""

    def __init__(self, codec: Codec, port: PortSection, settings: StreamSection, meters: Mapping[int, str],
                 emit: Emit, clock: Callable[[], datetime] | None = None,
                 device_numbers: Mapping[str, str] | None = None) -> None:
        self.codec = codec
        self.port = port
        self.settings = settings
        self._meters = dict(meters)  # M-Bus channel (0: the meter on the port) -> meter id
        self._emit = emit
        #: Meter id -> the device number configured for it: a telegram from another meter is not its.
        self._devices = {m: d for m, d in (device_numbers or {}).items() if d}
        self._clock = clock or (lambda: datetime.now(UTC))
        self.connected = False
        self.telegrams = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=600)
        self._up = False  # a telegram came since the link was last lost: losing it is news
        self._outage = False  # comm_lost was said: the next telegram is comm_restored

    # -- the Driver contract -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.codec.protocol}:{self.port.name}"

    @property
    def target(self) -> str:
        return self.port.name

    def meter_ids(self) -> Sequence[str]:
        return tuple(self._meters.values())

    def meter_health(self, meter_id: str) -> MeterHealth | None:
        return None

    def status(self, observed: Observed) -> DriverStatus:
        now = time.monotonic()
        rate = sum(1 for t in self._recent if now - t <= 60) / 60
        return DriverStatus(label=f"{self.codec.protocol} {self.port.name}", where=self.port.address,
                            connected=self.connected, rate=rate, rate_unit="telegrams/s",
                            errors_by_kind=dict(self.errors), meters=len(self._meters),
                            detail={"port": self.port.name, "telegrams": self.telegrams, "last_error": self.last_error})

    async def run(self) -> None:
        s = self.settings
        backoff = Backoff(s.reconnect_min_delay, max(s.reconnect_min_delay, s.reconnect_max_delay))
        while True:
            try:
                link = await open_link(self.port, self.codec.line(self.port))
            except (OSError, TimeoutError, ValueError) as exc:
                self._fail("connect", f"cannot open {self.port.address}: {exc}")
                await self._lost()
                await asyncio.sleep(backoff.next())
                continue
            self.connected = True
            try:
                if await self._read(link):
                    backoff.reset()
            except (OSError, TimeoutError) as exc:
                self._fail("link", f"{self.port.address}: {exc}")
            finally:
                self.connected = False
                link.close()
            await self._lost()
            await asyncio.sleep(backoff.next())

    async def _lost(self) -> None:
        """comm_lost for the port's meters, once per outage (the link dropped or fell silent)."""
        if self._up:
            self._up, self._outage = False, True
            for meter_id in self._meters.values():
                await self._emit(Event(self._clock(), meter_id, EventKind.COMM_LOST, Severity.WARNING,
                                       f"{self.codec.protocol} port {self.port.name}: {self.last_error}"))

    # -- reading -------------------------------------------------------------------------------

    def _fail(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        if message != self.last_error:
            log.warning("%s: %s", self.name, message)
        self.last_error = message

    async def _read(self, link: Link) -> bool:
        """Until the link ends or falls silent; True if a telegram was read (the link works)."""
        framer = self.codec.framer()
        good = False
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # meets a read completing, and the reader would outlive its task's cancel().
                async with asyncio.timeout(self.settings.idle_timeout):
                    data = await link.reader.read(4096)
            except TimeoutError:
                self._fail("idle", f"{self.port.address}: nothing for {self.settings.idle_timeout:g} s")
                return good
            if not data:
                self._fail("link", f"{self.port.address}: closed by the other end")
                return good
            for chunk in framer.feed(data):
                good = await self._chunk(chunk) or good

    async def _chunk(self, chunk: Chunk) -> bool:
        received = self._clock()
        meter = self._meters.get(0)
        if chunk.reason is not None:
            await self._dead(received, meter, chunk.reason, f"{chunk.reason} bytes on {self.port.name}", chunk.data)
            return False
        try:
            readout = self.codec.decode(chunk.data)
        except FrameError as exc:
            await self._dead(received, meter, exc.reason, exc.detail, chunk.data)
            return False
        self.telegrams += 1
        self._recent.append(time.monotonic())
        if not self._up:
            self._up, restored, self._outage = True, self._outage, False
            for each in self._meters.values() if restored else ():
                await self._emit(Event(received, each, EventKind.COMM_RESTORED, Severity.INFO,
                                       f"{self.codec.protocol} port {self.port.name}: telegrams again"))
        expected = self._devices.get(meter) if meter is not None else None
        sent = identity(readout[0][2]) if readout else None
        if expected is not None and sent is not None and not same_device(sent, expected):
            await self._dead(received, meter, "unknown_meter",
                             f"telegram from meter {shown_id(sent)} on {self.port.name}, which is configured for "
                             f"{meter} (device_number {expected}): a meter exchange? update the configuration",
                             chunk.data)
            return True
        for channel, ts, values in readout:
            meter_id = self._meters.get(channel)
            if meter_id is None or not values:
                continue  # an M-Bus device nobody configured: the electricity readings still count
            await self._emit(RawObjects(meter_id, ts or received, received, values, chunk.data))
        return True

    async def _dead(self, ts: datetime, meter: str | None, reason: str, detail: str, data: bytes) -> None:
        self._fail(reason, detail)
        where = f"{self.port.name} ({self.port.address})" + (f" meter {meter}" if meter else "")
        await self._emit(DeadLetter(ts=ts, source=self.codec.protocol, where=where, reason=reason, detail=detail,
                                    payload=self.codec.show(data), meter_id=meter))


__all__ = ["P1", "SML", "Codec", "FrameError", "StreamReader", "encrypted_p1", "p1_codec"]
