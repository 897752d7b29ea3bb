"""The M-Bus master's requests on one line (EN 13757-2): SND_NKE, REQ_UD2 with multi-telegram
answers, selection by secondary address, and the wildcard search of a bus scan.

Every call holds the line for its whole exchange; the caller (drivers/mbus/poller.py) holds the
bus lock around it, so one request is on the wire at a time.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from drivers.mbus import frame
from drivers.mbus.link import Link
from drivers.mbus.records import Telegram, decode
from gateway.errors import MeterTimeout

T = TypeVar("T")
#: Telegrams of one multi-telegram answer we follow before calling it a loop.
MAX_TELEGRAMS = 16


@dataclass(frozen=True, slots=True)
class Readout:
    """What one read got: the telegrams in order (one unless the slave had more records), their
    frames as sent, and the time on the wire."""

    telegrams: tuple[Telegram, ...]
    frames: tuple[bytes, ...]
    latency_s: float


def secondary_pattern(secondary: str) -> bytes:
    """The 8 bytes of a CI 0x52 selection from 16 hex digits (id 8 BCD digits, manufacturer 4,
    version 2, medium 2); 'F' is a wildcard, a shorter string is padded with wildcards."""
    text = secondary.upper().ljust(16, "F")
    if len(text) != 16 or any(c not in "0123456789ABCDEF" for c in text):
        msg = f"secondary address {secondary!r}: 16 hex digits (id, manufacturer, version, medium)"
        raise ValueError(msg)
    ident = bytes.fromhex(text[:8])[::-1]
    man = bytes.fromhex(text[8:12])[::-1]
    return ident + man + bytes.fromhex(text[12:16])


class Master:
    def __init__(self, link: Link, timeout: float, name: str, retries: int = 0) -> None:
        self.link = link
        self.timeout = timeout
        self.name = name
        #: Requests sent again after no answer or a garbled one; a REQ_UD2 goes again with the same
        #: FCB, so the slave repeats the telegram it sent rather than moving on to its next one.
        self.retries = retries
        self.retried = 0

    async def _ensure_open(self) -> None:
        if not self.link.is_open:
            self.link.close()
            await self.link.open()

    async def _ask(self, request: bytes, where: str, timeout: float | None = None) -> bytes:
        await self._ensure_open()
        self.link.drain_input()
        await self.link.write(request)
        return await self.link.read_frame(self.timeout if timeout is None else timeout, where)

    async def _ack(self, request: bytes, where: str) -> None:
        answer = await self._ask(request, where)
        if answer != bytes((frame.ACK,)):
            raise frame.FrameError(where, f"expected the single character 0xE5, got {answer.hex(' ')}", answer)

    async def select(self, secondary: str, where: str, retries: bool = False) -> None:
        """Select one slave by its secondary address: it then answers at address 0xFD. A scan's
        wildcard selects are not repeated (silence and collisions are what it looks for)."""
        request = frame.select_secondary(secondary_pattern(secondary))
        if retries:
            await self._again(lambda: self._ack(request, where))
        else:
            await self._ack(request, where)

    async def read(self, address: int, where: str) -> Readout:
        """SND_NKE, then REQ_UD2 until the slave has no more records (FCB toggled per telegram).
        DriverError (MeterTimeout, FrameError, ConnectionFailed) on the first thing that fails."""
        started = time.monotonic()
        if address != frame.ADDRESS_SELECTED:
            # The select is itself the reset of a secondary-addressed slave; NKE to 0xFD would deselect it.
            await self._again(lambda: self._ack(frame.snd_nke(address), where))
        fcb = True  # the first REQ_UD2 after SND_NKE has FCB set; each next telegram toggles it
        telegrams: list[Telegram] = []
        frames: list[bytes] = []
        for _ in range(MAX_TELEGRAMS):
            raw, parsed = await self._again(functools.partial(self._rsp_ud, address, fcb, where))
            try:
                telegram = decode(parsed.ci, parsed.data, where)
            except frame.FrameError as exc:
                raise frame.FrameError(where, exc.detail, raw) from None
            telegrams.append(telegram)
            frames.append(raw)
            if not telegram.more:
                return Readout(tuple(telegrams), tuple(frames), time.monotonic() - started)
            fcb = not fcb
        raise frame.FrameError(where, f"more than {MAX_TELEGRAMS} telegrams in one answer", b"".join(frames))

    async def _again(self, exchange: Callable[[], Awaitable[T]]) -> T:
        """`exchange`, repeated up to `retries` times after a timeout or a garbled frame."""
        for attempt in range(self.retries + 1):
            try:
                return await exchange()
            except (MeterTimeout, frame.FrameError):
                if attempt == self.retries:
                    raise
                self.retried += 1
        raise AssertionError("unreachable")

    async def _rsp_ud(self, address: int, fcb: bool, where: str) -> tuple[bytes, frame.LongFrame]:
        raw = await self._ask(frame.req_ud2(address, fcb), where)
        parsed = frame.parse(raw)
        if not isinstance(parsed, frame.LongFrame) or parsed.c & 0xCF != frame.RSP_UD:
            raise frame.FrameError(where, f"expected RSP_UD, got {raw.hex(' ')}", raw)
        if address not in (frame.ADDRESS_SELECTED, frame.ADDRESS_BROADCAST_REPLY) and parsed.a != address:
            raise frame.FrameError(where, f"answer from address {parsed.a}, asked {address}", raw)
        return raw, parsed

    async def probe(self, address: int, where: str) -> bool:
        """Whether a slave answers SND_NKE at `address` (a scan); a garbled answer counts (someone is there)."""
        try:
            await self._ack(frame.snd_nke(address), where)
        except MeterTimeout:
            return False
        except frame.FrameError:
            return True
        return True

    async def search(self, where: str, prefix: str = "", found: list[str] | None = None) -> list[str]:
        """Wildcard search of secondary ids (EN 13757-3 annex): select id patterns digit by digit;
        one answer is one slave (read its full address), a collision means several: go a digit deeper."""
        out = [] if found is None else found
        for digit in "0123456789":
            pattern = prefix + digit
            try:
                await self.select(pattern, where)
            except MeterTimeout:
                continue
            except frame.FrameError:
                if len(pattern) < 8:
                    await self.search(where, pattern, out)
                continue
            try:
                readout = await self.read(frame.ADDRESS_SELECTED, where)
            except frame.FrameError:
                if len(pattern) < 8:
                    await self.search(where, pattern, out)
                continue
            out.append(readout.telegrams[0].secondary())
            await asyncio.sleep(0)
        return out


__all__ = ["MAX_TELEGRAMS", "Master", "Readout", "secondary_pattern"]
