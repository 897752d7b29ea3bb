"""The push listener: meters that call in over TCP (IEC 62056-47 wrapper) with DataNotification
APDUs (IDIS push setup), read as RawObjects like a poll.

A notification names neither its objects nor their scalers: its body is the values of the push
setup's object list, in order. So the sender is found first - by the system title of a ciphered
(general-glo / general-ded) envelope, or, plain, by an octet-string in the body equal to a
configured logical device name - and its layout (the push setup's object list, attribute 2, and
each register's scaler and unit) is read once from the meter through its poller (`Layouts`) and
kept. Values outside the meter's object map are not emitted.

Untrusted input is never a crash: a frame that is not a wrapper, an APDU that is not a
DataNotification, a ciphertext that does not authenticate, a replayed invocation counter, a body
that does not match the layout are dead-lettered with the bytes in hex; an unknown sender is
dead-lettered with its system title (hex) or what it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from dlms_cosem import security as dlms_security

from drivers.base import DriverStatus, Observed, Problem
from drivers.dlms import axdr
from drivers.dlms.cosem import ScalerUnit, date_time, normal_code, obis_bytes, obis_code, scaled
from drivers.dlms.errors import FrameError
from drivers.dlms.links import MAX_WRAPPED, WRAPPER_VERSION, unwrap_header
from drivers.dlms.poller import DlmsPoller
from drivers.dlms.reads import Reader
from drivers.dlms.session import Security, Session
from drivers.dlms.settings import DlmsMeter, DlmsSection
from drivers.polling.health import MeterHealth
from gateway.model import DeadLetter
from gateway.model.meters import MeterBinding
from gateway.model.samples import RawObjects, Sample

log = logging.getLogger(__name__)
Emit = Callable[[Sample], Awaitable[None]]

DATA_NOTIFICATION = 0x0F
GENERAL_GLO, GENERAL_DED = 0xDB, 0xDC
#: Seconds a meter's connection may stay silent before the listener closes it.
IDLE = 60.0
_KEEP = 512
_REGISTERS = (3, 4)


@dataclass(frozen=True, slots=True)
class PushLayout:
    """What a meter's pushes carry: (class, code, attribute) per value, and each register's scaler."""

    objects: tuple[tuple[int, str, int], ...]
    scalers: Mapping[str, ScalerUnit]


#: Reads a meter's push layout (push setup code -> layout) through its poller; raises on failure.
Layouts = Callable[[str, str], Awaitable[PushLayout]]


@dataclass(frozen=True, slots=True)
class PushSender:
    """A configured meter as a push sender: how it is recognised and its keys."""

    meter_id: str
    security: Security
    system_title: bytes | None = None
    logical_device_name: bytes | None = None
    codes: frozenset[str] = frozenset()  # the codes of its object map (what is emitted)


class PushError(ValueError):
    """A push that cannot be read: `reason` is the dead letter's, `raw` the bytes."""

    def __init__(self, reason: str, detail: str, raw: bytes, meter_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.raw, self.meter_id = reason, raw, meter_id


@dataclass(slots=True)
class _Counts:
    connections: int = 0
    received: int = 0
    emitted: int = 0
    dead: int = 0
    by_meter: dict[str, int] = field(default_factory=dict)


class PushListener:
    """Listens on `host:port` until cancelled; emits RawObjects and DeadLetters."""

    def __init__(self, address: str, senders: Sequence[PushSender], layouts: Layouts, emit: Emit, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "0.0.0.0", int(port)
        self._by_title = {s.system_title: s for s in senders if s.system_title}
        self._by_name = {s.logical_device_name: s for s in senders if s.logical_device_name}
        self._layouts = layouts
        self._emit = emit
        self._clock = clock or (lambda: datetime.now(UTC))
        self._known: dict[tuple[str, str], PushLayout] = {}
        self._last_ic: dict[str, int] = {}
        self.counts = _Counts()
        #: The port actually bound (port 0: a free one), once `run` listens.
        self.bound: int | None = None
        self.listening = asyncio.Event()

    # -- the driver contract -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return "dlms:push"

    @property
    def target(self) -> str:
        return f"push {self.host}:{self.port}"

    def meter_ids(self) -> tuple[str, ...]:
        return ()  # its meters are their pollers' (poll-now, health); the listener only adds readings

    def meter_health(self, meter_id: str) -> MeterHealth | None:
        return None

    def status(self, observed: Observed) -> DriverStatus:
        c = self.counts
        return DriverStatus(label="dlms push", where=f"{self.host}:{self.bound or self.port}", connected=self.bound
                            is not None, rate=0.0, rate_unit="pushes/s", errors_by_kind={"dead": c.dead},
                            meters=len(self._by_title) + len(self._by_name),
                            detail={"connections": c.connections, "received": c.received, "emitted": c.emitted,
                                    "dead_lettered": c.dead, "by_meter": dict(c.by_meter)})

    async def run(self) -> None:
        server = await asyncio.start_server(self._connection, self.host, self.port)
        self.bound = server.sockets[0].getsockname()[1]
        self.listening.set()
        log.info("DLMS push listener on %s:%s", self.host, self.bound)
        try:
            async with server:
                await server.serve_forever()
        finally:
            self.bound = None
            self.listening.clear()

    # -- one meter's connection ----------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        peer = writer.get_extra_info("peername")
        where = f"push from {peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "push"
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE):
                        header = await reader.readexactly(8)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        await self._dead(where, "frame", f"connection closed mid-header after {len(exc.partial)} "
                                         "byte(s)", exc.partial)
                    return
                version, _source, _dest, length = unwrap_header(header)
                if version != WRAPPER_VERSION or length > MAX_WRAPPED:
                    rest = await _some(reader)
                    await self._dead(where, "frame", f"not an IEC 62056-47 wrapper header (version {version})",
                                     header + rest)
                    return  # the stream cannot be re-synchronised: the meter calls again
                try:
                    async with asyncio.timeout(IDLE):
                        apdu = await reader.readexactly(length)
                except asyncio.IncompleteReadError as exc:
                    await self._dead(where, "frame", f"wrapper announced {length} bytes, {len(exc.partial)} came",
                                     header + exc.partial)
                    return
                await self.handle(apdu, where)
        except (TimeoutError, ConnectionError, OSError):
            pass
        except Exception as exc:  # untrusted input: never the listener's end
            log.debug("%s: unexpected %s", where, type(exc).__name__, exc_info=True)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle(self, apdu: bytes, where: str = "push") -> RawObjects | None:
        """One APDU as received: emitted as RawObjects, or dead-lettered (returns None). Never raises."""
        self.counts.received += 1
        try:
            raw = await self._read(apdu)
        except PushError as err:
            await self._dead(where, err.reason, str(err), err.raw, err.meter_id)
            return None
        except Exception as exc:  # not foreseen: still a dead letter with the bytes
            await self._dead(where, "frame", f"unexpected {type(exc).__name__}: {exc}", apdu)
            return None
        self.counts.emitted += 1
        self.counts.by_meter[raw.meter_id] = self.counts.by_meter.get(raw.meter_id, 0) + 1
        await self._emit(raw)
        return raw

    async def _read(self, apdu: bytes) -> RawObjects:
        received = self._clock()
        sender: PushSender | None = None
        plain = apdu
        if apdu[:1] in (bytes([GENERAL_GLO]), bytes([GENERAL_DED])):
            title, sc, ic, text = _envelope(apdu)
            sender = self._by_title.get(title)
            if sender is None:
                raise PushError("unknown_sender", f"push from unknown system title {title.hex()}", apdu)
            plain = self._decrypt(sender, title, sc, ic, text, apdu)
        if plain[:1] != bytes([DATA_NOTIFICATION]) or len(plain) < 7:
            raise PushError("frame", f"not a DataNotification (tag {plain[:1].hex() or 'none'})", apdu,
                            sender.meter_id if sender else None)
        when, body = _notification(plain, apdu)
        try:
            values = axdr.decode(body)
        except axdr.DataError as exc:
            raise PushError("frame", f"notification body: {exc}", apdu, sender.meter_id if sender else None) from None
        items = values if isinstance(values, tuple) else (values,)
        if sender is None:
            sender = next((s for v in items if isinstance(v, bytes) and (s := self._by_name.get(bytes(v)))), None)
            if sender is None:
                names = [v.hex() for v in items if isinstance(v, bytes) and not isinstance(v, axdr.DateTimeBytes)]
                raise PushError("unknown_sender", "plain push from no configured logical device name "
                                f"(octet-strings: {', '.join(names) or 'none'})", apdu)
        setup = next((obis_code(bytes(v)) for v in items[:1] if isinstance(v, bytes) and len(v) == 6), "0-0:25.9.0")
        layout = await self._layout(sender, setup, apdu)
        if len(layout.objects) != len(items):
            raise PushError("frame", f"{len(items)} values, the push setup {setup} lists {len(layout.objects)}",
                            apdu, sender.meter_id)
        out: list[tuple[str, Decimal | str, str | None]] = []
        for (cls, code, attr), value in zip(layout.objects, items, strict=True):
            if cls == 8 and attr == 2 and when is None:
                with contextlib.suppress(ValueError):
                    when = date_time(value).at
            if attr != 2 or code not in sender.codes or cls not in (1, *_REGISTERS):
                continue
            out.append(_value(sender, cls, code, value, layout, apdu))
        return RawObjects(sender.meter_id, when or received, received, tuple(out), raw=apdu)

    def _decrypt(self, sender: PushSender, title: bytes, sc: int, ic: int, text: bytes, apdu: bytes) -> bytes:
        s = sender.security
        if s.encryption_key is None or s.authentication_key is None:
            raise PushError("decrypt", f"ciphered push from {title.hex()}, but meter {sender.meter_id} has no keys",
                            apdu, sender.meter_id)
        last = self._last_ic.get(sender.meter_id)
        if last is not None and ic <= last:
            raise PushError("replay", f"invocation counter {ic} not above {last} (replayed push)", apdu,
                            sender.meter_id)
        try:
            plain: bytes = dlms_security.decrypt(dlms_security.SecurityControlField.from_bytes(bytes([sc])),
                                                 system_title=title, invocation_counter=ic, key=s.encryption_key,
                                                 cipher_text=text, auth_key=s.authentication_key)
        except Exception:  # InvalidTag, a security control it does not know: never the push's text
            raise PushError("decrypt", f"ciphered push from {title.hex()} does not authenticate under meter "
                            f"{sender.meter_id}'s keys", apdu, sender.meter_id) from None
        self._last_ic[sender.meter_id] = ic
        return plain

    async def _layout(self, sender: PushSender, setup: str, apdu: bytes) -> PushLayout:
        key = (sender.meter_id, setup)
        found = self._known.get(key)
        if found is None:
            try:
                found = await self._layouts(sender.meter_id, setup)
            except Exception as exc:
                raise PushError("layout", f"push setup {setup} of meter {sender.meter_id} not read: {exc}", apdu,
                                sender.meter_id) from None
            self._known[key] = found
        return found

    async def _dead(self, where: str, reason: str, detail: str, raw: bytes, meter_id: str | None = None) -> None:
        self.counts.dead += 1
        log.warning("%s: %s", where, detail)
        await self._emit(DeadLetter(ts=self._clock(), source="dlms", where=where, reason=reason, detail=detail,
                                    payload=raw[:_KEEP].hex(), meter_id=meter_id))


def _envelope(apdu: bytes) -> tuple[bytes, int, int, bytes]:
    """(system title, security control, invocation counter, ciphertext+tag) of a general-glo/ded APDU."""
    try:
        n, pos = axdr.length_at(apdu, 1)
        title = apdu[pos:pos + n]
        m, pos = axdr.length_at(apdu, pos + n)
        content = apdu[pos:pos + m]
    except axdr.DataError as exc:
        raise PushError("frame", f"ciphered push: {exc}", apdu) from None
    if len(title) != 8 or len(content) != m or m < 5 + 12:
        raise PushError("frame", f"ciphered push: system title of {len(title)} bytes, content of {len(content)}",
                        apdu)
    return bytes(title), content[0], int.from_bytes(content[1:5], "big"), bytes(content[5:])


def _notification(plain: bytes, apdu: bytes) -> tuple[datetime | None, bytes]:
    """The notification's date-time (None: absent or unspecified) and its body's bytes."""
    pos = 5  # tag, long-invoke-id-and-priority
    size = plain[pos]
    if size not in (0, 12) or len(plain) < pos + 1 + size + 1:
        raise PushError("frame", f"DataNotification date-time of {size} bytes", apdu)
    when = None
    if size == 12:
        with contextlib.suppress(ValueError):
            when = date_time(plain[pos + 1:pos + 13]).at
    return when, plain[pos + 1 + size:]


def _value(sender: PushSender, cls: int, code: str, value: axdr.Value, layout: PushLayout,
           apdu: bytes) -> tuple[str, Decimal | str, str | None]:
    if cls in _REGISTERS:
        su = layout.scalers.get(code)
        try:
            return code, scaled(value, su), su.unit if su else None
        except TypeError as exc:
            raise PushError("frame", f"{code}: {exc}", apdu, sender.meter_id) from None
    if isinstance(value, bytes):
        return code, value.decode("latin-1") if value.isascii() else value.hex(), None
    if isinstance(value, int) and not isinstance(value, bool):
        return code, Decimal(value), None
    if isinstance(value, Decimal):
        return code, value, None
    raise PushError("frame", f"{code}: Data value {value!r:.60} is no number or text", apdu, sender.meter_id)


async def read_layout(session: Session, reader: Reader, setup: str) -> PushLayout:
    """A push setup's object list (attribute 2) and the scaler and unit of each register in it."""
    raw = await session.get(40, obis_bytes(setup), 2)
    try:
        listed = axdr.decode(raw)
        objects = tuple(_listed(entry) for entry in (listed if isinstance(listed, tuple) else ()))
    except (axdr.DataError, TypeError, ValueError) as exc:
        raise FrameError(session.meter_id, session.where, f"push setup {setup} object list: {exc}", raw) from None
    scalers = {code: await reader.scaler_unit(session, cls, code) for cls, code, attr in objects
               if cls in _REGISTERS and attr == 2}
    return PushLayout(objects, scalers)


def _listed(entry: axdr.Value) -> tuple[int, str, int]:
    """One push object list entry: structure {class-id, logical-name, attribute-index, data-index}."""
    if not (isinstance(entry, tuple) and len(entry) == 4 and isinstance(entry[0], int)
            and isinstance(entry[1], bytes) and isinstance(entry[2], int)):
        raise TypeError(f"entry {entry!r:.80} is not {{class, logical name, attribute, data index}}")
    return entry[0], obis_code(entry[1]), entry[2]


def layouts_of(pollers: Sequence[DlmsPoller]) -> Layouts:
    """Layouts read through the poller that serves the meter (one association, under its bus lock)."""
    by_meter = {m: p for p in pollers for m in p.meter_ids()}

    async def layout(meter_id: str, setup: str) -> PushLayout:
        poller = by_meter.get(meter_id)
        if poller is None:
            raise LookupError(f"meter {meter_id} is not polled (inactive?)")
        found: PushLayout = await poller.in_session(meter_id, lambda s, r: read_layout(s, r, setup))
        return found
    return layout


def sender(meter_id: str, meter: DlmsMeter, security: Security, codes: Sequence[str]) -> PushSender:
    return PushSender(meter_id, security, bytes.fromhex(meter.system_title) if meter.system_title else None,
                      meter.logical_device_name.encode("latin-1") if meter.logical_device_name else None,
                      frozenset(normal_code(c) for c in codes))


def push_problems(settings: DlmsSection, meters: Sequence[tuple[MeterBinding, DlmsMeter]]) -> Iterator[Problem]:
    """push_listen is HOST:PORT; a meter's system title is 8 bytes of hex, and no two meters share one."""
    if settings.push_listen is not None:
        host, _, port = settings.push_listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            yield ("dlms", "push_listen"), f"{settings.push_listen!r} is not HOST:PORT (e.g. 0.0.0.0:4059)"
    titles: dict[bytes, str] = {}
    for b, m in meters:
        if m.system_title is None:
            continue
        try:
            title = bytes.fromhex(m.system_title)
        except ValueError:
            yield ("meters", b.index, "system_title"), "not hex"
            continue
        if len(title) != 8:
            yield ("meters", b.index, "system_title"), "a system title is 8 bytes (16 hex digits)"
        elif title in titles:
            yield ("meters", b.index, "system_title"), f"meter {titles[title]} has the same system title"
        titles.setdefault(title, b.meter_id)


async def _some(reader: asyncio.StreamReader) -> bytes:
    """What else is waiting (for the dead letter), without waiting for more."""
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(0.05):
            return await reader.read(_KEEP)
    return b""


__all__ = ["IDLE", "Layouts", "PushError", "PushLayout", "PushListener", "PushSender", "layouts_of", "push_problems", "read_layout", "sender"]
