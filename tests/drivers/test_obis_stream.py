"""P1 and SML drivers on real links: the simulators serve telegrams on a TCP port (as ser2net does)
and into one end of a socat pty pair; faults (bad CRC, missing telegrams, noise, cut-off telegrams,
a meter exchange) are counted and dead-lettered, the good telegrams around them still read, with
the decimals the meter shows."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from decimal import Decimal

from drivers.obis_stream.reader import P1, SML, StreamReader, encrypted_p1, p1_codec
from drivers.obis_stream.settings import PortSection, StreamSection
from gateway.model import Source
from simulators.p1.cipher import encrypt
from simulators.p1.meter import Faults, SimP1Meter
from simulators.sml.meter import SimSmlMeter
from simulators.stream import TelegramServer, write_serial
from tests.drivers.obis_helpers import Got, canonical, reading
from tests.fixtures.gateway import eventually


async def test_p1_faults_are_counted_and_dead_lettered_and_the_other_telegrams_read_exactly() -> None:
    meter = SimP1Meter(faults=Faults(bad_crc=frozenset({2}), missing=frozenset({3}), garbage=frozenset({4}),
                                     truncated=frozenset({5}), exchange=frozenset({7})))
    expected: dict[int, dict[str, Decimal]] = {}

    def source() -> bytes:
        wire = meter.telegram()
        expected[meter.count] = meter.expected()
        return wire

    got = Got()
    async with TelegramServer(source, interval=0.05) as server:
        port = PortSection(name="p1-a", tcp=server.address)
        async with reading(P1, port, {0: "E-1", 1: "G-1"}, got) as reader:
            await eventually(lambda: reader.telegrams >= 6)
    electricity = [o for o in got.objects if o.meter_id == "E-1"]
    # Telegram 1 is read; 2 fails its CRC, 3 is never sent, 4 comes after noise (read), 5 is cut off
    # (read as truncated when 6 starts), 6, 7 (the new meter), 8 are read.
    first = canonical(electricity[0], "dsmr_p1", Source.P1)
    reasons = [d.reason for d in got.dead]
    assert reasons[:3] == ["crc", "garbage", "truncated"], reasons
    assert all(d.meter_id == "E-1" and "p1-a" in d.where for d in got.dead)
    assert reader.errors["crc"] == 1 and reader.errors["garbage"] == 1 and reader.errors["truncated"] == 1
    assert first == expected[1]
    # After the exchange the registers start again near zero: kept as read (VEE judges the drop).
    after = [canonical(o, "dsmr_p1", Source.P1)["energy_import_t1"] for o in electricity]
    assert after[0] > Decimal(2000) and min(after) < Decimal(1)
    gas = [o for o in got.objects if o.meter_id == "G-1"]
    assert gas and gas[0].values == (("0-1:24.2.1", Decimal("246.138"), "m3"),)
    assert gas[0].ts.second == 0  # the gas meter's own capture time, not the telegram's


async def test_p1_reader_reconnects_after_the_server_drops_it() -> None:
    meter = SimP1Meter()
    got = Got()
    async with TelegramServer(meter.telegram, interval=0.05) as server:
        port = PortSection(name="p1-a", tcp=server.address)
        async with reading(P1, port, {0: "E-1"}, got, reconnect_min_delay=0.05, reconnect_max_delay=0.1) as reader:
            await eventually(lambda: reader.telegrams >= 2)
            server.drop_clients()
            seen = reader.telegrams
            await eventually(lambda: reader.telegrams >= seen + 2)
    assert reader.errors["link"] >= 1


async def test_sml_stream_over_tcp_with_faults() -> None:
    meter = SimSmlMeter(faults=Faults(bad_crc=frozenset({2}), garbage=frozenset({3}), truncated=frozenset({4}),
                                      missing=frozenset({5}), exchange=frozenset({6})))
    expected: dict[int, dict[str, Decimal]] = {}

    def source() -> bytes:
        wire = meter.frame()
        expected[meter.count] = meter.expected()
        return wire

    got = Got()
    async with TelegramServer(source, interval=0.05) as server:
        port = PortSection(name="sml-a", tcp=server.address)
        async with reading(SML, port, {0: "S-1"}, got) as reader:
            await eventually(lambda: reader.telegrams >= 5)
    reasons = [d.reason for d in got.dead]
    assert reasons[:3] == ["crc", "garbage", "truncated"], reasons
    assert got.dead[0].payload.startswith("1b1b1b1b01010101")  # hex: SML is binary
    readings = [canonical(o, "sml_generic", Source.SML) for o in got.objects]
    assert readings[0] == expected[1]  # 0.1 Wh with scaler -1, as exact kWh
    assert min(r["energy_import"] for r in readings) < Decimal(1)  # the new meter after the exchange


async def test_p1_over_a_serial_pty(serial_pair: tuple[str, str]) -> None:
    writer_end, reader_end = serial_pair
    meter = SimP1Meter(faults=Faults(bad_crc=frozenset({2})))
    got = Got()
    port = PortSection(name="p1-serial", device=reader_end)
    async with reading(P1, port, {0: "E-9"}, got) as reader:
        await eventually(lambda: reader.connected)
        task = asyncio.create_task(write_serial(writer_end, meter.telegram, interval=0.05))
        try:
            await eventually(lambda: reader.telegrams >= 3)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert [d.reason for d in got.dead][:1] == ["crc"]
    assert got.objects[0].meter_id == "E-9"
    assert canonical(got.objects[0], "dsmr_p1", Source.P1)["energy_import_t2"] == Decimal("245.467")


KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AUTH = bytes.fromhex("00112233445566778899AABBCCDDEEFF")  # the Luxembourg specification's public key


async def test_encrypted_p1_telegrams_decrypt_with_the_key_from_the_environment() -> None:
    meter = SimP1Meter(faults=Faults(bad_crc=frozenset({3})))
    counter = itertools.count(1)

    def source() -> bytes:
        wire = meter.telegram()
        n = next(counter)
        if n == 2:  # a telegram altered on the way: GCM authentication fails
            sealed = bytearray(encrypt(wire, KEY, AUTH, b"SAG12345", n))
            sealed[40] ^= 1
            return bytes(sealed)
        return encrypt(wire, KEY, AUTH, b"SAG12345", n)

    got = Got()
    async with TelegramServer(source, interval=0.05) as server:
        port = PortSection(name="lux", tcp=server.address, encryption_key_env="P1_KEY_LUX")
        codec = encrypted_p1(port, {"P1_KEY_LUX": KEY.hex()})
        async with reading(codec, port, {0: "E-LU"}, got) as reader:
            await eventually(lambda: reader.telegrams >= 3)
    assert [d.reason for d in got.dead][:2] == ["decrypt", "crc"]
    assert got.dead[0].payload.startswith("db08")  # the ciphered bytes, in hex
    first = canonical(got.objects[0], "dsmr_p1", Source.P1)
    assert first["energy_import_t2"] == Decimal("245.467")


async def test_a_missing_key_dead_letters_naming_the_variable() -> None:
    meter = SimP1Meter()
    got = Got()
    async with TelegramServer(lambda: encrypt(meter.telegram(), KEY, AUTH, b"SAG12345", 1), interval=0.05) as server:
        port = PortSection(name="lux", tcp=server.address, encryption_key_env="P1_KEY_LUX")
        async with reading(encrypted_p1(port, {}), port, {0: "E-LU"}, got):
            await eventually(lambda: got.dead)
    assert got.dead[0].reason == "decrypt"
    assert got.dead[0].detail == "cannot decrypt: environment variable P1_KEY_LUX is not set"
    assert got.objects == []


async def test_a_telegram_from_another_meter_than_the_configured_one_is_dead_lettered() -> None:
    # The meter on the port is replaced (telegram 3 on): its telegrams name a new equipment id.
    meter = SimP1Meter(equipment="E0043007382246019", faults=Faults(exchange=frozenset({3})))
    got = Got()
    async with TelegramServer(meter.telegram, interval=0.05) as server:
        port = PortSection(name="p1-a", tcp=server.address)
        reader_ = StreamReader(P1, port, StreamSection(ports=[port]), {0: "E-1"}, got,
                               device_numbers={"E-1": "E0043007382246019"})
        task = asyncio.create_task(reader_.run())
        try:
            await eventually(lambda: len(got.dead) >= 2)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert len(got.objects) == 2 and all(o.meter_id == "E-1" for o in got.objects)
    dead = got.dead[0]
    assert dead.reason == "unknown_meter" and dead.meter_id == "E-1"
    assert dead.detail.startswith(f"telegram from meter {meter.equipment} on p1-a, which is configured for E-1")


async def test_a_dsmr5_telegram_without_its_crc_is_dead_lettered_and_a_port_may_carry_only_a_gas_meter() -> None:
    meter = SimP1Meter()

    def source() -> bytes:
        wire = meter.telegram()
        return wire[: wire.rindex(b"!") + 1] + b"\r\n" if meter.count == 2 else wire  # telegram 2 loses its CRC

    got = Got()
    async with TelegramServer(source, interval=0.05) as server:
        port = PortSection(name="p1-a", tcp=server.address)  # dsmr = "5", the default
        async with reading(p1_codec(port, {}), port, {1: "G-1"}, got) as reader:
            await eventually(lambda: reader.telegrams >= 2)
    assert [(d.reason, d.detail) for d in got.dead] == [("crc", "no CRC after '!' (DSMR 4 and later always send one)")]
    assert {o.meter_id for o in got.objects} == {"G-1"}  # the electricity values: nobody's, not dead letters


async def test_a_silent_port_is_comm_lost_once_and_restored_when_telegrams_come_again() -> None:
    meter = SimP1Meter()
    quiet = False
    got = Got()

    def source() -> bytes:
        return b"" if quiet else meter.telegram()

    async with TelegramServer(source, interval=0.05) as server:
        port = PortSection(name="p1-a", tcp=server.address)
        async with reading(P1, port, {0: "E-1", 1: "G-1"}, got, idle_timeout=0.3,
                           reconnect_min_delay=0.05, reconnect_max_delay=0.1) as reader:
            await eventually(lambda: reader.telegrams >= 2)
            quiet = True
            await eventually(lambda: got.events)
            await eventually(lambda: reader.errors["idle"] >= 2)  # still silent after reconnecting
            quiet = False
            await eventually(lambda: len(got.events) >= 4)
    kinds = [(e.kind.value, e.meter_id) for e in got.events]
    assert kinds == [("comm_lost", "E-1"), ("comm_lost", "G-1"), ("comm_restored", "E-1"), ("comm_restored", "G-1")]
    assert "nothing for 0.3 s" in got.events[0].detail
