"""The DLMS driver's codec pieces: A-XDR data, OBIS codes, scaler and unit applied exactly, the
COSEM date-time; and its links on real sockets: the IEC 62056-47 wrapper and HDLC framing, with
bad input (garbage, wrong checksums, truncation) ending in a FrameError that keeps the bytes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from dlms_cosem.hdlc import address as hdlc_address
from dlms_cosem.hdlc import frames as hdlc_frames

from drivers.dlms import axdr
from drivers.dlms.cosem import ScalerUnit, date_time, normal_code, obis_bytes, obis_code, scaled
from drivers.dlms.errors import FrameError
from drivers.dlms.links import HdlcLink, WrapperLink, tcp_opener, wrap
from drivers.dlms.reads import guess_class

# -- A-XDR data ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "value"), [
    ("0600bc614e", 12345678),                       # double-long-unsigned
    ("05ffffff38", -200),                           # double-long
    ("10fffd", -3),                                 # long
    ("12ffff", 65535),                              # long-unsigned
    ("0f7f", 127), ("0ffd", -3),                    # integer
    ("1600", 0), ("1101", 1), ("0301", True), ("00", None),
    ("090401020304", b"\x01\x02\x03\x04"),
    ("0a0341424b", "ABK"),
    ("04" "0a" "ff80", "1111111110"),               # bit-string of 10 bits
    ("020212fffd1623", (65533, 35)),                # structure {long-unsigned, enum}
    ("0102" "0f01" "0f02", (1, 2)),                 # array
    ("14" "0000000000000064", 100), ("15" "ffffffffffffffff", 2**64 - 1),
])
def test_axdr_values(raw: str, value: object) -> None:
    assert axdr.decode(bytes.fromhex(raw.replace(" ", ""))) == value


def test_float32_reads_as_the_shortest_decimal_and_float64_as_its_repr() -> None:
    assert axdr.decode(bytes.fromhex("17" "4640e666")) == Decimal("12345.6")  # the float32 12345.599609375
    assert axdr.decode(bytes.fromhex("18") + bytes.fromhex("3fb999999999999a")) == Decimal("0.1")
    assert axdr.shortest_float32(229.8000030517578) == Decimal("229.8")


@pytest.mark.parametrize(("raw", "message"), [
    ("06bc614e", "truncated double-long-unsigned: 4 byte(s) needed, 3 left"),
    ("0905aabb", "truncated octet-string"),
    ("", "truncated: a value was expected"),
    ("1100ff", "1 byte(s) after the value"),
    ("63", "unsupported or unknown data type tag 99"),
    ("13", "unsupported or unknown data type compact-array"),
    ("0985", "length of 5 bytes"),
    ("0a02ff41", "visible-string is not text"),
    ("0101" * 10, "nested deeper than 8"),
])
def test_axdr_bad_input_is_one_typed_error_with_the_offset(raw: str, message: str) -> None:
    with pytest.raises(axdr.DataError, match="A-XDR data at byte \\d+: " + re.escape(message)):
        axdr.decode(bytes.fromhex(raw))


# -- COSEM values -------------------------------------------------------------------------------

def test_obis_codes_as_map_codes() -> None:
    assert obis_code(bytes([1, 0, 1, 8, 0, 255])) == "1-0:1.8.0"
    assert obis_code(bytes([1, 0, 1, 8, 0, 101])) == "1-0:1.8.0*101"
    assert obis_bytes("1-0:1.8.0") == obis_bytes("1-0:1.8.0.255") == obis_bytes("1-0:1.8.0*255") == bytes([1, 0, 1, 8, 0, 255])
    assert normal_code("1-0:32.7.0.255") == "1-0:32.7.0"
    with pytest.raises(ValueError, match="is not an OBIS code"):
        obis_bytes("1.8.0")
    with pytest.raises(ValueError, match=r"0\.\.255"):
        obis_bytes("1-0:1.8.300")
    assert [guess_class(c) for c in ("0-0:1.0.0", "0-0:96.1.0", "1-0:1.8.0", "1-0:1.6.0")] == [8, 1, 3, 4]


def test_scaler_applies_exactly_with_the_registers_unit() -> None:
    su = ScalerUnit.from_value((-3, 30))
    assert su == ScalerUnit(-3, "Wh")
    assert scaled(12345678, su) == Decimal("12345.678")
    assert str(scaled(2301, ScalerUnit.from_value((-1, 35)))) == "230.1"
    assert scaled(7, ScalerUnit.from_value((3, 27))) == Decimal("7E+3")
    assert ScalerUnit.from_value((0, 13)).unit == "m3" and ScalerUnit.from_value((0, 255)).unit is None
    with pytest.raises(TypeError, match="scaler_unit must be structure"):
        ScalerUnit.from_value((1,))
    with pytest.raises(TypeError, match="value must be a number, got str"):
        scaled("12", su)


def test_cosem_date_time_to_utc_with_deviation_and_status() -> None:
    # 2026-12-07 10:15:30.50, deviation -60 (local = UTC + 1 h), status 0x80 (daylight saving)
    raw = bytes.fromhex("07ea0c07010a0f1e32ffc480")
    t = date_time(raw)
    assert t.at == datetime(2026, 12, 7, 9, 15, 30, 500_000, tzinfo=UTC) and t.status == 0x80
    assert date_time(bytes.fromhex("07ea0c07ff0a0f00ff800000")).at == datetime(2026, 12, 7, 10, 15, tzinfo=UTC)
    with pytest.raises(ValueError, match="unspecified"):
        date_time(bytes.fromhex("ffff0c07ff0a0f00ff800000"))


# -- links on real sockets ----------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


async def test_wrapper_link_exchanges_apdus_and_refuses_a_foreign_header() -> None:
    async def meter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(8)
        body = await reader.readexactly(int.from_bytes(header[6:8], "big"))
        assert header[:6] == bytes.fromhex("0001 0010 0001".replace(" ", ""))
        writer.write(wrap(1, 16, b"\xc4" + body))
        header = await reader.readexactly(8)
        await reader.readexactly(int.from_bytes(header[6:8], "big"))
        writer.write(wrap(5, 16, b"\xc4\x01"))  # from another logical device
        await writer.drain()
        await reader.read()

    async with server(meter) as port:
        link = WrapperLink(tcp_opener("127.0.0.1", port), "ep", 16, 1, timeout=5)
        await link.open()
        assert await link.exchange(b"\xc0\x01") == b"\xc4\xc0\x01"
        with pytest.raises(FrameError, match="from wPort 5 to 16") as info:
            await link.exchange(b"\xc0\x02")
        assert info.value.raw == wrap(5, 16, b"\xc4\x01")
        await link.close()


async def test_wrapper_link_truncated_answer_is_a_closed_connection() -> None:
    async def meter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(10)
        writer.write(wrap(1, 16, b"\xc4\x01\x02")[:9])  # header says 3 bytes, 1 comes
        await writer.drain()

    async with server(meter) as port:
        link = WrapperLink(tcp_opener("127.0.0.1", port), "ep", 16, 1, timeout=5)
        await link.open()
        with pytest.raises(ConnectionError, match="closed mid-frame after 1 byte"):
            await link.exchange(b"\xc0\x01")
        await link.close()


CLIENT = hdlc_address.HdlcAddress(logical_address=16, physical_address=None, address_type="client")
SERVER = hdlc_address.HdlcAddress(logical_address=1, physical_address=17, address_type="server")


def _ua() -> bytes:
    return bytes(hdlc_frames.UnNumberedAcknowledgmentFrame(destination_address=CLIENT, source_address=SERVER,
                                                           payload=b"").to_bytes())


def _i(payload: bytes, ssn: int = 0, rsn: int = 1, segmented: bool = False) -> bytes:
    return bytes(hdlc_frames.InformationFrame(destination_address=CLIENT, source_address=SERVER, payload=payload,
                                              send_sequence_number=ssn, receive_sequence_number=rsn,
                                              segmented=segmented, final=True).to_bytes())


async def _frame(reader: asyncio.StreamReader) -> bytes:
    first = await reader.readexactly(3)
    length = ((first[1] & 0x07) << 8) | first[2]
    return first + await reader.readexactly(length - 1)


async def test_hdlc_link_snrm_segments_and_llc() -> None:
    got: list[bytes] = []

    async def meter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await _frame(reader))  # SNRM
        writer.write(_ua())
        got.append(await _frame(reader))  # I-frame with the request
        writer.write(_i(b"\xe6\xe7\x00\xc4\x01", segmented=True))
        got.append(await _frame(reader))  # RR
        writer.write(_i(b"\xc1\x00\x06", ssn=1))
        got.append(await _frame(reader))  # DISC
        writer.write(_ua())
        await writer.drain()
        await reader.read()

    async with server(meter) as port:
        link = HdlcLink(tcp_opener("127.0.0.1", port), "ep", 16, 1, 17, timeout=5)
        await link.open()
        assert await link.exchange(b"\xc0\x01\xc1") == b"\xc4\x01\xc1\x00\x06"
        await link.close()
    assert got[0][3:7] == bytes([0x02, 0x23, 0x21, 0x93])  # to server 1/17, from client 16, SNRM
    assert b"\xe6\xe6\x00\xc0\x01\xc1" in got[1]
    assert got[3][6] == 0x53  # DISC, poll bit


@pytest.mark.parametrize(("answer", "message"), [
    (lambda: _i(b"\xe6\xe7\x00\xc4\x01")[:-3] + b"\x00\x00\x7e", "not a valid HDLC frame here"),  # FCS wrong
    (lambda: b"\x7e\x55\x01\x02\x03\x7e", "is not type 3"),                                        # garbage
    (lambda: _i(b"\xc4\x01"), "without the LLC response header"),
    (lambda: b"\x01" * 2100, "no HDLC flag in 2048 bytes"),
])
async def test_hdlc_bad_frames_are_frame_errors_that_keep_the_bytes(answer: Callable[[], bytes], message: str) -> None:
    async def meter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _frame(reader)
        writer.write(_ua())
        await _frame(reader)
        writer.write(answer())
        await writer.drain()
        await reader.read()

    async with server(meter) as port:
        link = HdlcLink(tcp_opener("127.0.0.1", port), "ep", 16, 1, 17, timeout=5)
        await link.open()
        with pytest.raises(FrameError, match=message) as info:
            await link.exchange(b"\xc0\x01")
        assert info.value.raw
        await link.close()
