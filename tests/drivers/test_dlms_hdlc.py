"""HDLC over a serial line: the driver on one end of a socat pty pair, on the other an HDLC front
for the Gurux peer (a meter with an optical/RS-485 port, as it were): each I-frame's APDU is handed
to the peer over its wrapper and the answer comes back in I-frames, segmented when longer than
128 bytes (the profile), so SNRM/UA, LLC, sequence numbers, RR and DISC are all ours on the line,
and the meter is not ours. Security low (password) and HLS-GMAC with ciphering."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dlms_cosem.hdlc import address as hdlc_address
from dlms_cosem.hdlc import frames as hdlc_frames

from drivers.base import BuildContext
from drivers.dlms.links import SerialLine, WrapperLink, serial_opener, tcp_opener
from drivers.dlms.spec import build
from gateway.config.sections import bindings
from gateway.model.samples import PollFailure, RawObjects, Sample
from gateway.runtime.config import GatewayConfig, cross_check
from tests.fixtures.dlms_peer import DlmsPeer, MakeDlmsPeer
from tests.fixtures.gateway import eventually, gateway_config

SEGMENT = 128


def _address(raw: bytes, at: int) -> tuple[int, int]:
    """An HDLC address starting at `at` (bytes until one with bit 0 set): (its logical part, next offset)."""
    end = at
    while not raw[end] & 1:
        end += 1
    parts = [b >> 1 for b in raw[at:end + 1]]
    upper = parts[0] << 7 | parts[1] if len(parts) == 4 else parts[0]
    return upper, end + 1


class HdlcFront:
    """The meter's side of the line: HDLC frames in, the peer's wrapper behind."""

    def __init__(self, peer: DlmsPeer, device: str) -> None:
        self.peer = peer
        self.device = device
        self.frames_in = 0

    async def serve(self) -> None:
        await self.serve_streams(*await serial_opener(SerialLine(self.device))())

    async def serve_streams(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssn = rsn = 0
        link: WrapperLink | None = None
        request = bytearray()
        client = server = hdlc_address.HdlcAddress(1, None, "client")
        try:
            while True:
                await reader.readuntil(b"\x7e")
                head = await reader.readexactly(2)
                while head[:1] == b"\x7e":
                    head = head[1:] + await reader.readexactly(1)
                length = ((head[0] & 0x07) << 8) | head[1]
                raw = b"\x7e" + head + await reader.readexactly(length - 1)
                self.frames_in += 1
                logical, at = _address(raw, 3)
                client_sap, at = _address(raw, at)
                control = raw[at]
                client = hdlc_address.HdlcAddress(client_sap, None, "client")
                server = hdlc_address.HdlcAddress(logical, 17, "server")
                if control == 0x93:  # SNRM
                    ssn = rsn = 0
                    link = WrapperLink(tcp_opener(self.peer.host, self.peer.port), "peer", client_sap, logical, 10)
                    await link.open()
                    writer.write(hdlc_frames.UnNumberedAcknowledgmentFrame(client, server, b"").to_bytes())
                elif control == 0x53:  # DISC
                    if link is not None:
                        await link.close()
                    writer.write(hdlc_frames.UnNumberedAcknowledgmentFrame(client, server, b"").to_bytes())
                elif control & 1 == 0:  # an I-frame: its information sits after the HCS
                    rsn = (rsn + 1) % 8
                    request += raw[at + 3:-3]
                    if head[0] & 0x08:  # segmented: more to come, acknowledge this one
                        writer.write(hdlc_frames.ReceiveReadyFrame(client, server, receive_sequence_number=rsn).to_bytes())
                        continue
                    assert link is not None and request[:3] == b"\xe6\xe6\x00"
                    answer = b"\xe6\xe7\x00" + await link.exchange(bytes(request[3:]))
                    request.clear()
                    chunks = [answer[i:i + SEGMENT] for i in range(0, len(answer), SEGMENT)]
                    for n, chunk in enumerate(chunks):
                        last = n == len(chunks) - 1
                        writer.write(hdlc_frames.InformationFrame(client, server, chunk, segmented=not last, final=True,
                                                                  send_sequence_number=ssn,
                                                                  receive_sequence_number=rsn).to_bytes())
                        ssn = (ssn + 1) % 8
                        if not last:  # the client's RR before the next segment
                            await reader.readuntil(b"\x7e")
                            rr = b""
                            while len(rr) < 8:
                                rr += await reader.readuntil(b"\x7e")
                await writer.drain()
        finally:
            if link is not None:
                await link.close()
            writer.close()


@asynccontextmanager
async def front(peer: DlmsPeer, device: str) -> AsyncIterator[HdlcFront]:
    f = HdlcFront(peer, device)
    task = asyncio.create_task(f.serve())
    try:
        yield f
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def terminal_server(peer: DlmsPeer) -> AsyncIterator[tuple[int, HdlcFront]]:
    """The same front behind a TCP port: a terminal server in front of a meter's HDLC port."""
    f = HdlcFront(peer, "")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await f.serve_streams(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the driver closed the connection after its DISC

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], f
    finally:
        srv.close()
        await srv.wait_closed()


async def test_hdlc_over_tcp_through_a_terminal_server(tmp_path: Path, dlms_peer: DlmsPeer) -> None:
    s = dlms_peer.settings
    async with terminal_server(dlms_peer) as (port, line):
        cfg = gateway_config(tmp_path / "gw", dlms={"state_dir": str(tmp_path / "dlms"), "endpoints": [
            {"name": "ts", "transport": "hdlc_tcp", "host": "127.0.0.1", "port": port, "timeout": 5}]})
        doc: dict[str, Any] = cfg.model_dump(mode="json")
        doc["meters"] = [{"meter_id": "E-1", "protocol": "dlms", "endpoint": "ts", "client_sap": s.client_address,
                          "server_logical": s.server_address, "server_physical": 17, "interval": 0.3, "align": False}]
        cfg = GatewayConfig.model_validate(doc)
        assert not cross_check(cfg, {}, {})
        got: list[Sample] = []

        async def emit(sample: Sample) -> None:
            got.append(sample)

        [poller] = build(BuildContext(settings=cfg.section("dlms"), meters=bindings(cfg), profiles={}, emit=emit,
                                      gateway_id="test"))
        task = asyncio.create_task(poller.run())
        try:
            raws = await eventually(lambda: [x for x in got if isinstance(x, RawObjects)][:2] or None)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    values = {code: (value, unit) for code, value, unit in raws[0].values}
    assert values["1-0:1.8.0"] == (Decimal("12345678"), "Wh")
    assert not [x for x in got if isinstance(x, PollFailure)] and line.frames_in > 5


@pytest.mark.parametrize("auth", ["low", "hls_gmac"])
async def test_hdlc_over_a_serial_line(tmp_path: Path, make_dlms_peer: MakeDlmsPeer, serial_pair: tuple[str, str],
                                       auth: str) -> None:
    peer = make_dlms_peer(auth)
    s = peer.settings
    keys = tmp_path / "keys.toml"
    entry = {"password": s.password} if auth == "low" else {"authentication_key": s.authentication_key,
                                                              "encryption_key": s.block_cipher_key}
    keys.write_text('[meters."E-1"]\n' + "".join(f'{k} = "{v}"\n' for k, v in entry.items()))
    os.chmod(keys, 0o600)
    cfg = gateway_config(tmp_path / "gw", dlms={
        "key_file": str(keys), "state_dir": str(tmp_path / "dlms"), "system_title": s.client_system_title,
        "endpoints": [{"name": "probe", "transport": "hdlc_serial", "device": serial_pair[1], "timeout": 5}]})
    doc: dict[str, Any] = cfg.model_dump(mode="json")
    doc["meters"] = [{"meter_id": "E-1", "protocol": "dlms", "endpoint": "probe", "client_sap": s.client_address,
                      "server_logical": s.server_address, "server_physical": 17, "authentication": auth,
                      "interval": 0.3, "align": False}]
    cfg = GatewayConfig.model_validate(doc)
    assert not cross_check(cfg, {}, {})
    got: list[Sample] = []

    async def emit(sample: Sample) -> None:
        got.append(sample)

    [poller] = build(BuildContext(settings=cfg.section("dlms"), meters=bindings(cfg), profiles={}, emit=emit,
                                  gateway_id="test"))
    async with front(peer, serial_pair[0]) as line:
        task = asyncio.create_task(poller.run())
        try:
            raws = await eventually(lambda: [x for x in got if isinstance(x, RawObjects)][:2] or None)
            end = datetime.now(UTC)
            rows = await poller.read_profile("E-1", "1-0:99.1.0", end - timedelta(hours=6), end)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    values = {code: (value, unit) for code, value, unit in raws[0].values}
    assert values["1-0:1.8.0"] == (Decimal("12345678"), "Wh") and values["1-0:32.7.0"] == (Decimal("230.1"), "V")
    assert len(rows.rows) >= 23  # six hours of quarter hours: an answer of several 128-byte segments
    assert not [x for x in got if isinstance(x, PollFailure)]
    assert line.frames_in > 10
