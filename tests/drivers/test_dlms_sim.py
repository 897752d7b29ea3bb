"""The DLMS/COSEM simulator, read by a client we did not write: dlms-cosem's own blocking DlmsClient over
real TCP (IEC 62056-47 wrapper), run in a thread beside the fleet's event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from dlms_cosem import cosem, dlms_data, utils
from dlms_cosem import enumerations as E
from dlms_cosem.clients.dlms_client import ActionError, DlmsClient
from dlms_cosem.cosem import Obis
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.exceptions import CommunicationError, DlmsClientException
from dlms_cosem.protocol import xdlms
from dlms_cosem.time import datetime_from_bytes, datetime_to_bytes

from simulators.dlms import DEFAULT_AK, DEFAULT_EK, DEFAULT_PASSWORD, DlmsFleet, FleetOptions, Secrets, make_token
from simulators.dlms.model import STATUS_POWER_DOWN, STATUS_TAMPER, Consumption

PUBLIC, MANAGEMENT = 16, 1
CLIENT_TITLE = b"TSTCLI01"
Work = Callable[[DlmsClient], Any]


def attr(interface: E.CosemInterface, ln: str, attribute: int) -> cosem.CosemAttribute:
    return cosem.CosemAttribute(interface, Obis.from_string(ln), attribute)


def read(c: DlmsClient, interface: E.CosemInterface, ln: str, attribute: int, **kw: Any) -> Any:
    return utils.parse_as_dlms_data(c.get(attr(interface, ln, attribute), **kw))


def as_utc(raw: bytes) -> dt.datetime:
    when: dt.datetime = datetime_from_bytes(raw)[0]
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def client(port: int, sap: int = PUBLIC, **kw: Any) -> DlmsClient:
    return DlmsClient.with_tcp_transport(host="127.0.0.1", port=port, client_logical_address=sap,
                                         server_logical_address=1, **{"timeout": 5, **kw})


def run_session(port: int, work: Work, sap: int = PUBLIC, **kw: Any) -> Any:
    c = client(port, sap, **kw)
    c.connect()
    try:  # DlmsClient.session() leaves the socket open when the work raises
        c.associate()
        result = work(c)
        c.release_association()
        return result
    finally:
        c.disconnect()


async def session(port: int, work: Work, sap: int = PUBLIC, **kw: Any) -> Any:
    return await asyncio.to_thread(run_session, port, work, sap, **kw)


def lls() -> dict[str, Any]:
    return {"authentication_method": E.AuthenticationMechanism.LLS, "password": DEFAULT_PASSWORD}


async def hls(port: int, work: Work, **kw: Any) -> Any:
    """HLS-GMAC with ciphering: the frame counter first (public client), then the management association."""
    def go() -> Any:
        counter = run_session(port, lambda c: read(c, E.CosemInterface.DATA, "0-0:43.1.0.255", 2))
        return run_session(port, work, MANAGEMENT, authentication_method=E.AuthenticationMechanism.HLS_GMAC,
                           encryption_key=DEFAULT_EK, authentication_key=DEFAULT_AK,
                           client_system_title=CLIENT_TITLE, client_initial_invocation_counter=counter, **kw)
    return await asyncio.to_thread(go)


@pytest.fixture
async def fleet() -> AsyncIterator[DlmsFleet]:
    # speedup 0: time stands still at the fleet's start, so values read apart can be compared exactly
    async with DlmsFleet(FleetOptions(meters=3, port=0, seed=5, speedup=0.0)) as f:
        yield f


@pytest.fixture
async def cipher_fleet() -> AsyncIterator[DlmsFleet]:
    options = FleetOptions(meters=2, port=0, seed=5, speedup=0.0, secrets=Secrets(cipher=True),
                           faults={"D-0002": frozenset({"wrong_key"})})
    async with DlmsFleet(options) as f:
        yield f


def port(fleet: DlmsFleet, meter_id: str = "D-0001") -> int:
    return fleet.meters[meter_id].port


async def test_registers_carry_scaler_and_unit_and_tou_adds_up(fleet: DlmsFleet) -> None:
    def work(c: DlmsClient) -> dict[str, Any]:
        out = {}
        for ln in ("1-0:1.8.0.255", "1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:1.8.3.255", "1-0:1.8.4.255",
                   "1-0:2.8.0.255", "1-0:2.8.1.255", "1-0:2.8.2.255", "1-0:2.8.3.255", "1-0:2.8.4.255",
                   "1-0:32.7.0.255", "1-0:31.7.0.255", "1-0:14.7.0.255", "1-0:1.7.0.255"):
            value = read(c, E.CosemInterface.REGISTER, ln, 2)
            scaler, unit = read(c, E.CosemInterface.REGISTER, ln, 3)
            out[ln] = (Decimal(value).scaleb(scaler), unit)
        return out

    got = await session(port(fleet), work)
    energy, unit = got["1-0:1.8.0.255"]
    assert unit == 30 and energy == int(energy) and energy > 1_000_000  # Wh, an exact integer
    assert sum(got[f"1-0:1.8.{t}.255"][0] for t in (1, 2, 3, 4)) == energy
    assert sum(got[f"1-0:2.8.{t}.255"][0] for t in (1, 2, 3, 4)) == got["1-0:2.8.0.255"][0]
    volts, unit = got["1-0:32.7.0.255"]
    assert unit == 35 and Decimal("225") <= volts <= Decimal("235") and volts.as_tuple().exponent == -1
    hz, unit = got["1-0:14.7.0.255"]
    assert unit == 44 and Decimal("49.9") <= hz <= Decimal("50.1")
    assert got["1-0:31.7.0.255"][1] == 33 and got["1-0:1.7.0.255"][1] == 27


async def test_registers_advance_with_time(fleet: DlmsFleet) -> None:
    def energy(c: DlmsClient) -> int:
        return int(read(c, E.CosemInterface.REGISTER, "1-0:1.8.0.255", 2))
    values = []
    for _ in range(3):
        values.append(await session(port(fleet), energy))
        fleet.advance(3600)
    assert values[0] < values[1] < values[2]


async def test_clock_and_drift_fault(fleet: DlmsFleet) -> None:
    fleet.meters["D-0002"].state.drift_s = 450.0
    def clock(c: DlmsClient) -> dt.datetime:
        return as_utc(read(c, E.CosemInterface.CLOCK, "0-0:1.0.0.255", 2))
    good = await session(port(fleet), clock)
    drifting = await session(port(fleet, "D-0002"), clock)
    assert abs((good - fleet.now()).total_seconds()) < 1
    assert (drifting - good).total_seconds() == pytest.approx(450, abs=1)


async def test_clock_set_moves_the_meter_clock(fleet: DlmsFleet) -> None:
    wanted = fleet.now() + dt.timedelta(minutes=3)
    def work(c: DlmsClient) -> tuple[Any, dt.datetime]:
        response = c.set(attr(E.CosemInterface.CLOCK, "0-0:1.0.0.255", 2),
                         dlms_data.OctetStringData(datetime_to_bytes(wanted)).to_bytes())
        return response, as_utc(read(c, E.CosemInterface.CLOCK, "0-0:1.0.0.255", 2))
    response, now = await session(port(fleet), work, MANAGEMENT, **lls())
    assert isinstance(response, xdlms.SetResponseNormal) and response.result == E.DataAccessResult.SUCCESS
    assert abs((now - wanted).total_seconds()) < 1


def profile_range(start: dt.datetime, end: dt.datetime) -> RangeDescriptor:
    clock = CaptureObject(attr(E.CosemInterface.CLOCK, "0-0:1.0.0.255", 2), 0)
    return RangeDescriptor(restricting_object=clock, from_value=start, to_value=end)


async def test_profile_range_read_of_history(fleet: DlmsFleet) -> None:
    now = fleet.now()
    start = (now - dt.timedelta(days=29)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + dt.timedelta(days=1)
    rows = await session(port(fleet), lambda c: read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 2,
                                                     access_descriptor=profile_range(start, end)))
    stamps = [as_utc(r[0]) for r in rows]
    assert stamps[0] == start and stamps[-1] == end and len(rows) == 97
    assert all(b - a == dt.timedelta(minutes=15) for a, b in itertools.pairwise(stamps))
    energy = [r[2] for r in rows]
    assert energy == sorted(energy) and energy[-1] > energy[0] and all(r[1] == 0 for r in rows)


async def test_profile_meets_the_register_and_uses_block_transfer(fleet: DlmsFleet) -> None:
    def work(c: DlmsClient) -> tuple[Any, Any, Any]:
        rows = read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 2)
        columns = read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 3)
        period = read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 4)
        return rows, columns, period
    # max_pdu_size 512: the 30 days (~2900 entries) come in blocks the client asks for one by one
    rows, columns, period = await session(port(fleet), work, max_pdu_size=512)
    assert period == 900 and len(rows) >= 30 * 96
    assert [(c[0], bytes(c[1]), c[2]) for c in columns] == [
        (8, bytes([0, 0, 1, 0, 0, 255]), 2), (1, bytes([0, 0, 96, 10, 1, 255]), 2), (3, bytes([1, 0, 1, 8, 0, 255]), 2)]
    last = as_utc(rows[-1][0])
    assert last <= fleet.now() < last + dt.timedelta(minutes=15)


class Entries:
    """Entry descriptor (selector 2): dlms-cosem 21.3.2 leaves its to_bytes unimplemented."""

    def __init__(self, first: int, last: int, col_from: int = 1, col_to: int = 0) -> None:
        self.raw = bytes([2, 2, 4, 6]) + first.to_bytes(4, "big") + b"\x06" + last.to_bytes(4, "big") + \
            b"\x12" + col_from.to_bytes(2, "big") + b"\x12" + col_to.to_bytes(2, "big")

    def to_bytes(self) -> bytes:
        return self.raw


async def test_profile_entries_by_index(fleet: DlmsFleet) -> None:
    def work(c: DlmsClient) -> tuple[Any, Any, Any]:
        entries = read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 7)
        first = read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 2, access_descriptor=Entries(1, 3))
        energy = read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 2,
                      access_descriptor=Entries(entries - 1, 0, 3, 3))
        return entries, first, energy
    _, first, energy = await session(port(fleet), work)
    assert len(first) == 3 and len(first[0]) == 3
    assert len(energy) == 2 and [len(r) for r in energy] == [1, 1] and energy[0][0] <= energy[1][0]


async def test_profile_gaps_and_tamper_bits(fleet: DlmsFleet) -> None:
    fleet.set_faults("D-0003", frozenset({"gaps", "tamper"}))
    now = fleet.now()
    start = now - dt.timedelta(days=6)
    rows = await session(port(fleet, "D-0003"), lambda c: read(
        c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 2, access_descriptor=profile_range(start, now)))
    stamps = [as_utc(r[0]) for r in rows]
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    assert dt.timedelta(hours=2, minutes=15) in steps  # a 2-hour power failure: 8 entries missing
    after_gap = [r[1] for r, step in zip(rows[1:], steps, strict=False) if step > dt.timedelta(minutes=15)]
    assert after_gap and all(s & STATUS_POWER_DOWN for s in after_gap)
    assert any(r[1] & STATUS_TAMPER for r in rows)
    status = await session(port(fleet, "D-0003"), lambda c: read(c, E.CosemInterface.DATA, "0-0:96.10.1.255", 2))
    assert status & STATUS_TAMPER


async def test_disconnect_reconnect_round_trip(fleet: DlmsFleet) -> None:
    relay = "0-0:96.3.10.255"
    def work(c: DlmsClient) -> list[tuple[Any, Any]]:
        states = [(read(c, E.CosemInterface.DISCONNECT_CONTROL, relay, 2),
                   read(c, E.CosemInterface.DISCONNECT_CONTROL, relay, 3))]
        for method in (1, 2):
            c.action(cosem.CosemMethod(E.CosemInterface.DISCONNECT_CONTROL, Obis.from_string(relay), method),
                     dlms_data.IntegerData(0).to_bytes())
            states.append((read(c, E.CosemInterface.DISCONNECT_CONTROL, relay, 2),
                           read(c, E.CosemInterface.DISCONNECT_CONTROL, relay, 3)))
        return states
    assert await session(port(fleet), work, MANAGEMENT, **lls()) == [(True, 1), (False, 0), (True, 1)]


async def test_public_client_may_not_disconnect(fleet: DlmsFleet) -> None:
    def work(c: DlmsClient) -> None:
        c.action(cosem.CosemMethod(E.CosemInterface.DISCONNECT_CONTROL, Obis.from_string("0-0:96.3.10.255"), 1),
                 dlms_data.IntegerData(0).to_bytes())
    with pytest.raises(ActionError, match="READ_WRITE_DENIED"):
        await session(port(fleet), work)


async def test_credit_and_token_enter(fleet: DlmsFleet) -> None:
    gateway = cosem.CosemMethod(E.CosemInterface.TOKEN_GATEWAY, Obis.from_string("0-0:19.40.0.255"), 1)
    token = make_token(5_000, 42)

    def enter(c: DlmsClient, text: str) -> int:
        # token_status: structure {status_code enum, data_value bit-string}; dlms-cosem 21.3.2 cannot parse
        # bit-strings, so the enum is read from its place
        raw = c.action(gateway, dlms_data.OctetStringData(text.encode()).to_bytes())
        assert raw[:3] == b"\x02\x02\x16" and raw[4:] == b"\x04\x00"
        return int(raw[3])

    def work(c: DlmsClient) -> tuple[Any, ...]:
        before = read(c, E.CosemInterface.CREDIT, "0-0:19.10.0.255", 2)
        results = (enter(c, token), enter(c, token), enter(c, "1234"), enter(c, token[:19] + "0"))
        after = read(c, E.CosemInterface.CREDIT, "0-0:19.10.0.255", 2)
        available = read(c, E.CosemInterface.ACCOUNT, "0-0:19.0.0.255", 5)
        # currency {name visible-string, scale integer, unit enum}: dlms-cosem cannot parse visible-strings
        currency = c.get(attr(E.CosemInterface.ACCOUNT, "0-0:19.0.0.255", 13))
        return before, results, after, available, currency

    before, results, after, available, currency = await session(port(fleet), work, MANAGEMENT, **lls())
    assert results == (3, 6, 4, 4)  # executed, then validation failure (reused), format failure twice
    assert after - before == 5_000 and available == after
    assert currency == b"\x02\x03\x0a\x03KES\x0f\xfe\x16\x01"  # KES, scale -2 (cents), unit 1


async def test_wrong_password_is_refused(fleet: DlmsFleet) -> None:
    with pytest.raises(DlmsClientException, match="AUTHENTICATION_FAILED"):
        await session(port(fleet), lambda c: None, MANAGEMENT, authentication_method=E.AuthenticationMechanism.LLS,
                      password=b"not-it")


async def test_hls_gmac_with_ciphering(cipher_fleet: DlmsFleet) -> None:
    def work(c: DlmsClient) -> tuple[Any, Any, Any]:
        energy = read(c, E.CosemInterface.REGISTER, "1-0:1.8.0.255", 2)
        now = cipher_fleet.now()
        rows = read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 2,
                    access_descriptor=profile_range(now - dt.timedelta(days=2), now))
        c.action(cosem.CosemMethod(E.CosemInterface.DISCONNECT_CONTROL, Obis.from_string("0-0:96.3.10.255"), 1),
                 dlms_data.IntegerData(0).to_bytes())
        return energy, rows, read(c, E.CosemInterface.DISCONNECT_CONTROL, "0-0:96.3.10.255", 2)
    energy, rows, relay = await hls(port(cipher_fleet), work)
    assert energy > 1_000_000 and len(rows) >= 2 * 96 and relay is False
    # the invocation counters went up: a second association must start above the first one's
    assert cipher_fleet.meters["D-0001"].state.client_ic_seen > 3
    assert await hls(port(cipher_fleet), lambda c: read(c, E.CosemInterface.REGISTER, "1-0:1.8.0.255", 2)) >= energy


async def test_ciphered_blocks_of_the_whole_profile(cipher_fleet: DlmsFleet) -> None:
    rows = await hls(port(cipher_fleet), lambda c: read(c, E.CosemInterface.PROFILE_GENERIC, "1-0:99.1.0.255", 2),
                     max_pdu_size=512)
    assert len(rows) >= 30 * 96 and len(cipher_fleet.meters["D-0001"].errors) == 0


async def test_ciphered_meter_refuses_plain_and_lls(cipher_fleet: DlmsFleet) -> None:
    with pytest.raises(DlmsClientException, match="AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED"):
        await session(port(cipher_fleet), lambda c: None, MANAGEMENT, **lls())


async def test_wrong_key_is_refused_and_the_other_meter_unaffected(cipher_fleet: DlmsFleet) -> None:
    with pytest.raises(DlmsClientException, match="AUTHENTICATION_FAILED"):
        await hls(port(cipher_fleet, "D-0002"), lambda c: None)
    assert await hls(port(cipher_fleet), lambda c: read(c, E.CosemInterface.REGISTER, "1-0:1.8.0.255", 2)) > 0


async def test_replayed_invocation_counter_is_refused(cipher_fleet: DlmsFleet) -> None:
    await hls(port(cipher_fleet), lambda c: None)
    with pytest.raises(DlmsClientException, match="AUTHENTICATION_FAILED"):
        await session(port(cipher_fleet), lambda c: None, MANAGEMENT,
                      authentication_method=E.AuthenticationMechanism.HLS_GMAC, encryption_key=DEFAULT_EK,
                      authentication_key=DEFAULT_AK, client_system_title=CLIENT_TITLE)


async def test_refuse_timeout_and_garbage_faults(fleet: DlmsFleet) -> None:
    fleet.set_faults("D-0001", frozenset({"refuse"}))
    fleet.set_faults("D-0002", frozenset({"timeout"}))
    fleet.set_faults("D-0003", frozenset({"garbage"}))
    with pytest.raises(DlmsClientException, match="REJECTED_PERMANENT"):
        await session(port(fleet), lambda c: None)
    with pytest.raises(CommunicationError):
        await session(port(fleet, "D-0002"), lambda c: None, timeout=1)

    def two_reads(c: DlmsClient) -> None:
        for _ in range(2):
            read(c, E.CosemInterface.REGISTER, "1-0:1.8.0.255", 2)
    with pytest.raises(Exception) as caught:  # dlms-cosem fails as it may: the bytes are no APDU
        await session(port(fleet, "D-0003"), two_reads)
    assert not isinstance(caught.value, CommunicationError)
    fleet.set_faults("D-0001", frozenset())
    assert await session(port(fleet), lambda c: read(c, E.CosemInterface.DATA, "0-0:42.0.0.255", 2)) \
        == b"SIM0000000000001"


async def receive_pushes(options: FleetOptions, count: int) -> tuple[DlmsFleet, list[tuple[bytes, bytes]]]:
    """Run a head-end listener and a fleet pushing to it until `count` notifications arrived."""
    got: list[tuple[bytes, bytes]] = []
    done = asyncio.Event()

    async def on_push(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(8)
        got.append((header, await reader.readexactly(int.from_bytes(header[6:8], "big"))))
        writer.close()
        if len(got) >= count:
            done.set()

    listener = await asyncio.start_server(on_push, "127.0.0.1", 0)
    host, listen_port = listener.sockets[0].getsockname()[:2]
    async with listener, DlmsFleet(dataclasses.replace(options, push=(host, listen_port))) as f:
        await asyncio.wait_for(done.wait(), 30)
    return f, got


async def test_push_data_notification_received() -> None:
    _, got = await receive_pushes(FleetOptions(meters=2, port=0, push_interval=0.2), 3)
    header, apdu = got[0]
    assert header[:2] == b"\x00\x01" and header[2:4] == b"\x00\x01" and header[4:6] == (102).to_bytes(2, "big")
    note = xdlms.DataNotification.from_bytes(apdu)
    push_ln, device, clock, energy_in, _energy_out = utils.parse_as_dlms_data(note.body)
    assert bytes(push_ln) == bytes([0, 0, 25, 9, 0, 255]) and bytes(device).startswith(b"SIM")
    assert energy_in > 1_000_000 and isinstance(as_utc(clock), dt.datetime)


async def test_ciphered_push_decrypts_with_the_keys_and_names_the_system_title() -> None:
    fleet, got = await receive_pushes(FleetOptions(meters=1, port=0, push_interval=0.2,
                                                   secrets=Secrets(cipher=True)), 2)
    envelope = xdlms.GeneralGlobalCipher.from_bytes(got[0][1])
    assert envelope.system_title == fleet.meters["D-0001"].state.spec.system_title
    note = xdlms.DataNotification.from_bytes(envelope.to_plain_apdu(DEFAULT_EK, DEFAULT_AK))
    assert utils.parse_as_dlms_data(note.body)[3] > 1_000_000
    second = xdlms.GeneralGlobalCipher.from_bytes(got[1][1])
    assert second.invocation_counter > envelope.invocation_counter


async def test_bad_input_is_answered_or_dropped_never_fatal(fleet: DlmsFleet) -> None:
    async def exchange(payload: bytes, read: bool = True) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port(fleet))
        writer.write(payload)
        await writer.drain()
        answer = await reader.read(4096) if read else b""
        writer.close()
        await writer.wait_closed()
        return answer

    assert await exchange(b"\x00\x07\x00\x10\x00\x01\x00\x03GET") == b""  # wrapper version 7: line closed
    assert fleet.meters["D-0001"].errors[-1].startswith("wrapper version 7")
    # no association yet: an exception-response (service not allowed), not a crash
    assert (await exchange(b"\x00\x01\x00\x10\x00\x01\x00\x02\xc0\x01"))[8:] == b"\xd8\x01\x01"
    # an AARQ that is no BER: AARE rejected
    answer = await exchange(b"\x00\x01\x00\x10\x00\x01\x00\x04\x60\x7f\x01\x02")
    assert answer[8] == 0x61
    assert await session(port(fleet), lambda c: read(c, E.CosemInterface.DATA, "0-0:42.0.0.255", 2)) \
        == b"SIM0000000000001"


async def test_a_fleet_of_500_meters_in_one_process() -> None:
    options = FleetOptions(meters=500, port=0, secrets=Secrets(cipher=True))
    async with DlmsFleet(options) as f:
        assert len({m.port for m in f.meters.values()}) == 500
        assert await hls(port(f, "D-0500"), lambda c: read(c, E.CosemInterface.REGISTER, "1-0:1.8.0.255", 2)) > 0


def test_same_seed_same_history_whatever_the_reads() -> None:
    origin = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    chunked, whole, other = Consumption(3, 5, origin), Consumption(3, 5, origin), Consumption(4, 5, origin)
    for k in (7, 100, 101, 960):
        chunked.extend_to(k)
    whole.extend_to(960)
    other.extend_to(960)
    assert chunked.pv_peak_wh  # meter 5 has solar: its export series is drawn too
    assert (chunked.import_cum == whole.import_cum).all() and (chunked.export_cum == whole.export_cum).all()
    assert (chunked.tou_cum == whole.tou_cum).all() and (chunked.tou_cum.sum(axis=0) == chunked.import_cum).all()
    assert (chunked.tou_export_cum.sum(axis=0) == chunked.export_cum).all()
    assert not (other.import_cum == whole.import_cum).all()


async def test_simulate_dlms_command_serves_a_ciphered_fleet() -> None:
    """`meter-gateway simulate dlms` as a person runs it: a real process, one port per meter."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "dlms", "--meters", "3", "--port", "0", "--cipher",
        "--fault", "D-0002=wrong_key", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(30):
            while not lines or lines[-1] != "ready; Ctrl-C stops":
                line = (await proc.stdout.readline()).decode()
                assert line, f"simulator ended early: {lines}"
                lines.append(line.strip())
        ports = dict(re.findall(r"(D-\d{4}) 127\.0\.0\.1:(\d+) system title", "\n".join(lines)))
        assert sorted(ports) == ["D-0001", "D-0002", "D-0003"] and "fault D-0002=wrong_key" in lines
        assert await hls(int(ports["D-0001"]), lambda c: read(c, E.CosemInterface.REGISTER, "1-0:1.8.0.255", 2)) > 0
        with pytest.raises(DlmsClientException, match="AUTHENTICATION_FAILED"):
            await hls(int(ports["D-0002"]), lambda c: None)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert b"Traceback" not in err


@pytest.mark.parametrize(("args", "message"), [
    (["--fault", "D-0009=timeout"], "unknown meter 'D-0009'"),
    (["--fault", "D-0001=melt"], "want METER=FAULT"),
    (["--key", "abcd"], "--key: want 32 hex digits"),
    (["--push", "nowhere"], "--push 'nowhere': want HOST:PORT"),
])
async def test_simulate_dlms_command_says_what_is_wrong(args: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "dlms", "--meters", "2", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and message in err.decode() and b"Traceback" not in err


def test_ciphered_bad_input_gets_exception_responses(fleet: DlmsFleet) -> None:
    """Session level: a glo-ciphered APDU that is cut short, forged or replayed, or that hides a service
    the meter lacks, is answered with an exception-response, and the counter moves only on a good one."""
    from simulators.dlms.cipher import Keys, encrypt
    from simulators.dlms.session import Session

    meter = fleet.meters["D-0001"]
    session = Session(meter.state, meter.objects, client_sap=MANAGEMENT, state="associated", ciphered=True,
                      client_title=CLIENT_TITLE)
    keys = Keys(DEFAULT_EK, DEFAULT_AK)

    def glo_get(plain: bytes, ic: int, key: Keys = keys) -> bytes:
        content = encrypt(plain, CLIENT_TITLE, ic, key)
        return b"\xc8" + bytes([len(content)]) + content

    get_ldn = bytes.fromhex("c00141000100002a0000ff0200")
    assert session.handle(b"\xc8\x05\x30\x00\x00\x00\x01", MANAGEMENT) == b"\xd8\x01\x05"  # cut short
    assert session.handle(glo_get(get_ldn, 7, Keys(bytes(16), DEFAULT_AK)), MANAGEMENT) == b"\xd8\x01\x05"
    assert meter.state.client_ic_seen == -1  # neither moved the counter
    answer = session.handle(glo_get(get_ldn, 7), MANAGEMENT)
    assert answer is not None and answer[0] == 0xCC and meter.state.client_ic_seen == 7
    assert session.handle(glo_get(get_ldn, 7), MANAGEMENT) == b"\xd8\x01\x06"  # replayed
    assert session.handle(glo_get(bytes.fromhex("c004410000"), 8), MANAGEMENT) == b"\xd8\x02\x02"  # no such GET
