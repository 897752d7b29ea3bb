"""The Gurux DLMS peer (tests/peers/gurux_dlms_server.py) checked with a client we did not write either:
dlms-cosem 21.3.2's blocking DlmsClient over its blocking TCP transport (wrapper).

Neither our driver (drivers/dlms/) nor our simulator (simulators/dlms/) takes part: if these pass,
the peer is a meter that a third-party client can associate with, read and command, in each
security mode the driver must support (issue 17 items 2, 3, 6, 8).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from dlms_cosem import cosem, dlms_data, enumerations, exceptions, utils
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.cosem import Obis
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor

from tests.fixtures.dlms_peer import DlmsPeer, MakeDlmsPeer

I = enumerations.CosemInterface  # noqa: E741
ENERGY = cosem.CosemAttribute(I.REGISTER, Obis(1, 0, 1, 8, 0), 2)
VOLTAGE_SCALER_UNIT = cosem.CosemAttribute(I.REGISTER, Obis(1, 0, 32, 7, 0), 3)
CLOCK = cosem.CosemAttribute(I.CLOCK, Obis(0, 0, 1, 0, 0), 2)
PROFILE = cosem.CosemAttribute(I.PROFILE_GENERIC, Obis(1, 0, 99, 1, 0), 2)
FRAME_COUNTER = cosem.CosemAttribute(I.DATA, Obis(0, 0, 43, 1, 0), 2)
OUTPUT_STATE = cosem.CosemAttribute(I.DISCONNECT_CONTROL, Obis(0, 0, 96, 3, 10), 2)
CONTROL_STATE = cosem.CosemAttribute(I.DISCONNECT_CONTROL, Obis(0, 0, 96, 3, 10), 3)
UNIT_WH, UNIT_V = 30, 35  # IEC 62056-6-2 unit enumeration


def client(peer: DlmsPeer, *, public: bool = False, **override: Any) -> DlmsClient:
    """A dlms-cosem client with the settings the peer was started with (override to break them)."""
    s = peer.settings
    kw: dict[str, Any] = {}
    if not public and s.auth == "low":
        kw = {"authentication_method": enumerations.AuthenticationMechanism.LLS, "password": s.password_bytes}
    elif not public and s.auth == "hls_gmac":
        kw = {
            "authentication_method": enumerations.AuthenticationMechanism.HLS_GMAC,
            "encryption_key": s.block_cipher_key_bytes,
            "authentication_key": s.authentication_key_bytes,
            "client_system_title": s.client_system_title_bytes,
        }
    kw.update(override)
    return DlmsClient.with_tcp_transport(
        peer.host, peer.port, client_logical_address=s.public_client if public else s.client_address,
        server_logical_address=s.server_address, timeout=10, **kw,
    )  # fmt: skip


@contextlib.contextmanager
def session(peer: DlmsPeer, **kw: Any) -> Iterator[DlmsClient]:
    c = client(peer, **kw)
    with c.session():
        yield c


def read(c: DlmsClient, attribute: cosem.CosemAttribute, access: RangeDescriptor | None = None) -> Any:
    return utils.parse_as_dlms_data(c.get(attribute, access_descriptor=access))


def clock_value(raw: bytes) -> dt.datetime:
    """A COSEM date-time octet string (deviation 0 here: the peer's clock is UTC)."""
    year = int.from_bytes(raw[0:2], "big")
    return dt.datetime(year, raw[2], raw[3], raw[5], raw[6], raw[7], tzinfo=dt.UTC)


def by_range(start: dt.datetime, end: dt.datetime) -> RangeDescriptor:
    clock = CaptureObject(cosem_attribute=cosem.CosemAttribute(I.CLOCK, Obis(0, 0, 1, 0, 0), 2), data_index=0)
    return RangeDescriptor(restricting_object=clock, from_value=start, to_value=end)


def test_lowest_security_reads_a_register_with_its_scaler_and_unit(dlms_peer: DlmsPeer) -> None:
    with session(dlms_peer) as c:
        assert read(c, ENERGY) == 12345678
        assert read(c, cosem.CosemAttribute(I.REGISTER, Obis(1, 0, 1, 8, 0), 3)) == [0, UNIT_WH]
        assert read(c, VOLTAGE_SCALER_UNIT) == [-1, UNIT_V]
        assert read(c, cosem.CosemAttribute(I.REGISTER, Obis(1, 0, 32, 7, 0), 2)) == 2301
        assert read(c, cosem.CosemAttribute(I.DATA, Obis(0, 0, 96, 1, 0), 2)) == b"GRX0000000001"


def test_the_clock_is_the_configured_skew_from_utc(make_dlms_peer: MakeDlmsPeer) -> None:
    peer = make_dlms_peer("none", clock_offset_s=3600)
    with session(peer) as c:
        before = dt.datetime.now(dt.UTC)
        shown = clock_value(read(c, CLOCK))
        after = dt.datetime.now(dt.UTC)
    # One hour ahead, to the second the meter shows (it truncates, so allow the second it was in).
    assert before.replace(microsecond=0) + dt.timedelta(hours=1) <= shown <= after + dt.timedelta(hours=1)


def test_a_profile_range_read_returns_the_quarter_hours_in_the_range(make_dlms_peer: MakeDlmsPeer) -> None:
    peer = make_dlms_peer("none", profile_days=3, interval_wh=250)
    now = dt.datetime.now(dt.UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
    with session(peer) as c:
        rows = read(c, PROFILE, by_range(start, start + dt.timedelta(hours=2)))
    assert [clock_value(r[0]) for r in rows] == [start + dt.timedelta(minutes=15 * i) for i in range(9)]
    assert [r[1] for r in rows] == [0] * 9
    energies = [r[2] for r in rows]
    assert [b - a for a, b in itertools.pairwise(energies)] == [250] * 8


def test_a_profile_gap_and_status_bits_are_served_as_configured(make_dlms_peer: MakeDlmsPeer) -> None:
    start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=6)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    peer = make_dlms_peer(
        "none", profile_days=1,
        profile_gaps=[[(start + dt.timedelta(minutes=30)).strftime(iso), (start + dt.timedelta(hours=1)).strftime(iso)]],
        profile_status={(start + dt.timedelta(minutes=15)).strftime(iso): 0x80},
    )  # fmt: skip
    with session(peer) as c:
        rows = read(c, PROFILE, by_range(start, start + dt.timedelta(hours=1)))
    assert [(clock_value(r[0]) - start, r[1]) for r in rows] == [
        (dt.timedelta(0), 0), (dt.timedelta(minutes=15), 0x80), (dt.timedelta(hours=1), 0),
    ]  # fmt: skip


def test_the_disconnect_control_switches_the_output(dlms_peer: DlmsPeer) -> None:
    with session(dlms_peer) as c:
        assert read(c, OUTPUT_STATE) is True
        c.action(cosem.CosemMethod(I.DISCONNECT_CONTROL, Obis(0, 0, 96, 3, 10), 1), dlms_data.IntegerData(0).to_bytes())
        assert (read(c, OUTPUT_STATE), read(c, CONTROL_STATE)) == (False, 0)  # disconnected
    with session(dlms_peer) as c:  # the state is the meter's, not the association's
        assert read(c, OUTPUT_STATE) is False
        c.action(cosem.CosemMethod(I.DISCONNECT_CONTROL, Obis(0, 0, 96, 3, 10), 2), dlms_data.IntegerData(0).to_bytes())
        assert (read(c, OUTPUT_STATE), read(c, CONTROL_STATE)) == (True, 1)  # connected


def test_low_security_associates_with_the_password(dlms_peer_low: DlmsPeer) -> None:
    with session(dlms_peer_low) as c:
        assert read(c, ENERGY) == 12345678


def test_a_wrong_password_is_refused_as_an_authentication_failure(dlms_peer_low: DlmsPeer) -> None:
    c = client(dlms_peer_low, password=b"wrong-pw")
    c.connect()
    try:
        with pytest.raises(exceptions.DlmsClientException, match="AUTHENTICATION_FAILED"):
            c.associate()
    finally:
        c.disconnect()


def test_lowest_security_is_refused_for_the_client_that_must_authenticate(dlms_peer_low: DlmsPeer) -> None:
    c = client(dlms_peer_low, authentication_method=None, password=None)
    c.connect()
    try:
        with pytest.raises(exceptions.DlmsClientException, match="AUTHENTICATION_FAILED"):
            c.associate()
    finally:
        c.disconnect()


def test_hls_gmac_with_ciphering_reads_registers_the_clock_and_the_profile(dlms_peer_hls: DlmsPeer) -> None:
    now = dt.datetime.now(dt.UTC)
    start = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=5)
    with session(dlms_peer_hls) as c:
        assert read(c, ENERGY) == 12345678
        assert read(c, VOLTAGE_SCALER_UNIT) == [-1, UNIT_V]
        assert abs(clock_value(read(c, CLOCK)) - now) < dt.timedelta(minutes=5)
        assert len(read(c, PROFILE, by_range(start, start + dt.timedelta(hours=1)))) == 5
        c.action(cosem.CosemMethod(I.DISCONNECT_CONTROL, Obis(0, 0, 96, 3, 10), 1), dlms_data.IntegerData(0).to_bytes())
        assert read(c, OUTPUT_STATE) is False


def test_the_frame_counter_tells_the_public_client_the_next_invocation_counter(dlms_peer_hls: DlmsPeer) -> None:
    with session(dlms_peer_hls, public=True) as c:
        assert read(c, FRAME_COUNTER) == 1  # nothing ciphered received yet
    with session(dlms_peer_hls, client_initial_invocation_counter=500) as c:
        read(c, ENERGY)
        used = c.client_invocation_counter
    with session(dlms_peer_hls, public=True) as c:
        assert read(c, FRAME_COUNTER) == used  # one past the last counter the meter received


def test_a_wrong_encryption_key_is_refused_at_association(dlms_peer_hls: DlmsPeer) -> None:
    c = client(dlms_peer_hls, encryption_key=bytes(16))
    c.connect()
    try:
        # Gurux cannot decode the glo-initiate-request and rejects (diagnostic: no reason given).
        with pytest.raises(exceptions.DlmsClientException, match="REJECTED_PERMANENT"):
            c.associate()
    finally:
        c.disconnect()


def test_a_wrong_authentication_key_fails_when_the_client_checks_the_aare(dlms_peer_hls: DlmsPeer) -> None:
    c = client(dlms_peer_hls, authentication_key=bytes(16))
    c.connect()
    try:
        # Gurux 1.0.203 does not check the AARQ's GCM tag: it accepts and answers with its own key,
        # so the client is the one that finds out (dlms-cosem: the AARE's tag is not valid).
        with pytest.raises(exceptions.DecryptionError):
            c.associate()
    finally:
        c.disconnect()


def test_the_peer_stops_and_restarts_on_the_same_port(dlms_peer: DlmsPeer) -> None:
    port = dlms_peer.port
    dlms_peer.stop()
    with pytest.raises(exceptions.CommunicationError):
        client(dlms_peer).connect()
    dlms_peer.restart()
    assert dlms_peer.port == port
    with session(dlms_peer) as c:
        assert read(c, ENERGY) == 12345678
