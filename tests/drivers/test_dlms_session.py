"""A DLMS session's GET with block transfer, on a real socket: a meter that answers in blocks
(GetResponseWithBlock ... GetResponseLastBlock) is followed block by block, each acknowledged with
GetRequestNext; an error in a block is the meter's access result; an answer that is not DLMS is a
FrameError with its bytes. (Gurux 1.0.203's server cannot send a second block, so this meter is a
scripted one, its APDUs built with dlms-cosem's classes.)"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from dlms_cosem import enumerations
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.conformance import Conformance

from drivers.dlms.errors import AccessError, AssociationRefused, FrameError
from drivers.dlms.links import WrapperLink, tcp_opener, wrap
from drivers.dlms.reads import REGISTER, Reader
from drivers.dlms.session import Security, Session

AARE = acse.ApplicationAssociationResponse(
    result=enumerations.AssociationResult.ACCEPTED, result_source_diagnostics=enumerations.AcseServiceUserDiagnostics.NULL,
    user_information=acse.UserInformation(content=xdlms.InitiateResponse(
        negotiated_conformance=Conformance(get=True, block_transfer_with_get_or_read=True, selective_access=True),
        server_max_receive_pdu_size=64))).to_bytes()


@asynccontextmanager
async def meter(answers: list[list[bytes]]) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A wrapper meter: the AARE, then for each request the next list of answers in turn."""
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = [[AARE], *answers]
        try:
            for step in script:
                for answer in step:
                    header = await reader.readexactly(8)
                    requests.append(await reader.readexactly(int.from_bytes(header[6:8], "big")))
                    writer.write(wrap(1, 16, answer))
                    await writer.drain()
            await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], requests
    finally:
        srv.close()
        await srv.wait_closed()


async def _session(port: int) -> tuple[Session, WrapperLink]:
    link = WrapperLink(tcp_opener("127.0.0.1", port), "ep", 16, 1, 5)
    await link.open()
    session = Session(link, Security(), meter_id="E-1", where="ep")
    await session.associate()
    return session, link


async def test_a_get_in_blocks_is_followed_to_its_last_block() -> None:
    value = bytes.fromhex("0600bc614e")  # double-long-unsigned 12345678
    scaler_unit = bytes.fromhex("02020ffd161e")  # {-3, Wh}
    blocks = [xdlms.GetResponseWithBlock(data=value[:2], block_number=1).to_bytes(),
              xdlms.GetResponseWithBlock(data=value[2:4], block_number=2).to_bytes(),
              xdlms.GetResponseLastBlock(data=value[4:], block_number=3).to_bytes(),
              b"\xc4\x01\xc1\x00" + scaler_unit]  # GET-response-normal (dlms-cosem's to_bytes of it is broken)
    async with meter([blocks]) as (port, requests):
        session, link = await _session(port)
        read = await Reader().read(session, REGISTER, "1-0:1.8.0")
        await link.close()
    assert (read.value, read.unit) == (Decimal("12345.678"), "Wh")
    nexts = [xdlms.GetRequestNext.from_bytes(r) for r in requests if r[:2] == b"\xc0\x02"]
    assert [n.block_number for n in nexts] == [1, 2]


@pytest.mark.parametrize(("answer", "error", "message"), [
    (xdlms.GetResponseNormalWithError(error=enumerations.DataAccessResult.OBJECT_UNDEFINED).to_bytes(), AccessError,
     "GET 3/1-0:1.8.0.255/2: object undefined"),
    (bytes.fromhex("c401c1000600bc61"), FrameError, "1-0:1.8.0 value: A-XDR data at byte 1: truncated"),  # truncated
    (bytes.fromhex("7f00"), FrameError, "APDU not understood"),  # no such APDU tag
])
async def test_bad_answers_are_typed_errors_with_the_bytes(answer: bytes, error: type[Exception], message: str) -> None:
    async with meter([[answer]]) as (port, _):
        session, link = await _session(port)
        with pytest.raises(error, match=message) as info:
            await Reader().read(session, REGISTER, "1-0:1.8.0")
        await link.close()
    if isinstance(info.value, FrameError):  # the bytes that are wrong: the data, or the whole APDU
        assert info.value.raw in (answer, answer[4:])


def _garbage(rng: random.Random, n: int) -> list[bytes]:
    """Answers a meter should never send: random bytes, and real APDUs cut short or bit-flipped."""
    real = [AARE, bytes.fromhex("c401c1000600bc614e"), bytes.fromhex("c401c100020212fffd161e"),
            xdlms.GetResponseWithBlock(data=b"\x06\x00", block_number=1).to_bytes()]
    out = []
    for i in range(n):
        base = real[i % len(real)]
        kind = i % 3
        if kind == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
        elif kind == 1:
            out.append(base[:rng.randrange(1, len(base))])
        else:
            flipped = bytearray(base)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            out.append(bytes(flipped))
    return out


async def test_garbage_answers_end_in_typed_errors_only() -> None:
    """Every answer a broken or hostile meter could give ends the read in one of the driver's typed
    errors (which the poller counts and dead-letters), never in another exception."""
    rng = random.Random(17)
    for answer in _garbage(rng, 150):
        async with meter([[answer] * 4]) as (port, _):  # every further request gets the same
            link = WrapperLink(tcp_opener("127.0.0.1", port), "ep", 16, 1, 0.5)
            await link.open()
            try:
                session = Session(link, Security(), meter_id="E-1", where="ep")
                await session.associate()
                await Reader().read(session, REGISTER, "1-0:1.8.0")
            # TimeoutError: an answer that happened to be an accepted AARE, then no answer to the GET
            # (the poller makes it a MeterTimeout).
            except (FrameError, AccessError, AssociationRefused, TimeoutError):
                pass
            finally:
                await link.close()
