"""The M-Bus master against simulated slaves on a real TCP socket and a socat pty pair: primary
and secondary addressing, multi-telegram answers, storage numbers as readings at their own date,
status bits as events, and bad input (bad checksums, silence, garbage, unknown VIFs) dead-lettered
and counted while the other meters keep being read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from drivers.mbus.link import LinkSettings
from drivers.mbus.maps import object_maps
from drivers.mbus.poller import MBusPoller, MBusTarget
from gateway.model import DeadLetter, Event, EventKind, Source
from gateway.model.readings import Channel
from gateway.model.samples import PollFailure, RawObjects, Sample
from gateway.normalise.objects import ObjectReader
from simulators.mbus.server import serve_pty, serve_tcp
from simulators.mbus.slave import Bus, Slave, heat, record, water
from tests.fixtures.modbus import wait_until


class Got:
    def __init__(self) -> None:
        self.items: list[Sample] = []

    async def __call__(self, item: Sample) -> None:
        self.items.append(item)

    def of(self, kind: type, meter: str | None = None) -> list[Any]:
        return [i for i in self.items if isinstance(i, kind) and meter in (None, getattr(i, "meter_id", None))]


@contextlib.asynccontextmanager
async def tcp_bus(bus: Bus) -> AsyncIterator[LinkSettings]:
    server = await serve_tcp(bus)
    try:
        yield LinkSettings("tcp", "127.0.0.1", server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def polling(poller: MBusPoller) -> AsyncIterator[MBusPoller]:
    task = asyncio.create_task(poller.run())
    try:
        yield poller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def readings(got: Got, meter: str, map_name: str) -> dict[tuple[Channel, datetime], float]:
    reader = ObjectReader(object_maps()[map_name], Source.MBUS)
    out = {}
    for raw in got.of(RawObjects, meter):
        batch = reader.read(raw)
        assert not batch.deadletters
        out.update({(r.channel, r.ts): r.value for r in batch.readings})
    return out


async def test_water_and_heat_meters_over_tcp_primary_and_secondary() -> None:
    hot = heat(7, 87654321, energy_kwh=4711, flow_c100=6512, return_c100=4025)
    hot.per_telegram = 3  # three telegrams: FCB toggled per telegram, 0x1F between them
    bus = Bus([water(5, 12345678, volume_l=54321), hot])
    got = Got()
    async with tcp_bus(bus) as link:
        poller = MBusPoller("cellar", link, [MBusTarget("W-1", 5, None, 0.2),
                                             MBusTarget("H-1", None, "87654321", 0.2)], got, timeout=0.5)
        async with polling(poller):
            await wait_until(lambda: len(got.of(RawObjects, "H-1")) >= 2 and len(got.of(RawObjects, "W-1")) >= 3, 10,
                             "reads")
    water_values = readings(got, "W-1", "mbus_water")
    heat_values = readings(got, "H-1", "mbus_heat")
    due = datetime(2026, 1, 1, tzinfo=UTC)
    assert water_values[(Channel.VOLUME, due)] == 10.0  # storage 1: the due-day value at its own date
    # ... sent once, not with every read (it has not changed)
    assert len([r for r in got.of(RawObjects, "W-1") if r.ts == due]) == 1
    assert all(r.recorded == (r.ts == due) for r in got.of(RawObjects, "W-1"))  # storage 1 is the meter's record
    now_volume = [v for (c, ts), v in water_values.items() if c is Channel.VOLUME and ts != due]
    assert now_volume and set(now_volume) == {54.321}
    assert repr(now_volume[0]) == "54.321"  # exact: litres x 10^-3, as the meter shows
    assert {v for (c, ts), v in heat_values.items() if c is Channel.HEAT_ENERGY and ts != due} == {4711.0}
    assert heat_values[(Channel.HEAT_ENERGY, due)] == 4000.0
    assert {v for (c, _), v in heat_values.items() if c is Channel.TEMPERATURE_FLOW} == {65.12}
    assert {v for (c, _), v in heat_values.items() if c is Channel.TEMPERATURE_RETURN} == {40.25}
    assert {v for (c, _), v in heat_values.items() if c is Channel.POWER} == {1.5}
    # Manufacturer-specific data is kept raw for diagnostics, with the frames.
    assert poller.last["H-1"]["manufacturer_data"] == "01 02 03"
    assert len(poller.last["H-1"]["frames"]) == 3
    assert poller.last["H-1"]["secondary"].startswith("87654321")
    assert not got.of(PollFailure) and not got.of(DeadLetter)


async def test_bad_frames_silence_and_alarms_leave_the_other_meter_alone() -> None:
    good, bad = water(1, 11111111, volume_l=1000), water(2, 22222222)
    bus = Bus([good, bad])
    got = Got()
    async with tcp_bus(bus) as link:
        poller = MBusPoller("b", link, [MBusTarget("GOOD", 1, None, 0.1), MBusTarget("BAD", 2, None, 0.1)], got,
                            timeout=0.2, failures_before_lost=2)
        async with polling(poller):
            bad.faults.bad_checksum = True
            await wait_until(lambda: any(d.reason == "frame" for d in got.of(DeadLetter, "BAD")), 10, "bad checksum")
            bad.faults.bad_checksum = False
            bad.faults.garbage = b"\x00\xff\x42"
            await wait_until(lambda: sum(d.reason == "frame" for d in got.of(DeadLetter, "BAD")) >= 2, 10, "garbage")
            bad.faults.garbage = b""
            bad.faults.truncate = 20  # a frame cut short, then silence
            await wait_until(lambda: any("truncated" in d.detail for d in got.of(DeadLetter, "BAD")), 10, "truncated")
            bad.faults.truncate = 0
            bad.faults.silent = True
            await wait_until(lambda: any(e.kind is EventKind.COMM_LOST for e in got.of(Event, "BAD")), 10, "lost")
            bad.faults.silent = False
            bad.faults.status = 0x04  # power low
            await wait_until(lambda: any(e.kind is EventKind.COMM_RESTORED for e in got.of(Event, "BAD")), 10, "back")
            await wait_until(lambda: any("power low" in e.detail for e in got.of(Event, "BAD")), 10, "alarm")
            n = len(got.of(RawObjects, "GOOD"))
            await wait_until(lambda: len(got.of(RawObjects, "GOOD")) > n + 2, 10, "good keeps being read")
    letters = [d for d in got.of(DeadLetter, "BAD") if d.reason == "frame"]
    assert "checksum" in letters[0].detail and letters[0].payload.startswith("68 ")
    assert "00 ff 42" in letters[1].payload
    assert all(d.source == "mbus" and d.where == "b primary 2" for d in letters)
    assert not got.of(PollFailure, "GOOD")
    alarm = next(e for e in got.of(Event, "BAD") if "power low" in e.detail)
    assert alarm.kind is EventKind.ANOMALY
    assert poller.frame_errors >= 2


async def test_unknown_vif_is_dead_lettered_once_and_the_rest_read() -> None:
    def odd(s: Slave) -> list[bytes]:
        return [record(0x04, 0x13, (777).to_bytes(4, "little")), record(0x01, 0x6F, b"\x09")]  # 0x6F: reserved

    bus = Bus([Slave(3, 33333333, records=odd)])
    got = Got()
    async with tcp_bus(bus) as link, polling(MBusPoller("b", link, [MBusTarget("M", 3, None, 0.1)], got, timeout=0.3)):
        await wait_until(lambda: len(got.of(RawObjects)) >= 3, 10, "reads")
    unknown = [d for d in got.of(DeadLetter) if d.reason == "unknown_vif"]
    assert len(unknown) == 1 and "0x6f" in unknown[0].detail
    assert ("volume", Decimal("0.777"), "m3") in got.of(RawObjects)[0].values


async def test_serial_line_over_a_socat_pty_pair(serial_pair: tuple[str, str]) -> None:
    server_end, client_end = serial_pair
    bus = Bus([water(9, 99999999, volume_l=42), heat(10, 10101010)])
    got = Got()
    serving = asyncio.create_task(serve_pty(bus, server_end))
    try:
        link = LinkSettings("serial", serial_port=client_end, baudrate=2400, parity="E")
        poller = MBusPoller("tty", link, [MBusTarget("W", 9, None, 0.3), MBusTarget("H", 10, None, 0.3)], got,
                            timeout=1.0)
        async with polling(poller):
            await wait_until(lambda: bool(got.of(RawObjects, "W") and got.of(RawObjects, "H")), 15, "reads over the pty")
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    assert ("volume", Decimal("0.042"), "m3") in got.of(RawObjects, "W")[0].values
    assert not got.of(PollFailure)


async def test_due_days_are_midnight_in_the_meters_zone() -> None:
    from zoneinfo import ZoneInfo

    got = Got()
    async with tcp_bus(Bus([water(5, 12345678)])) as link, polling(MBusPoller(
            "b", link, [MBusTarget("W", 5, None, 0.1)], got, timeout=0.3, zone=ZoneInfo("Europe/Berlin"))):
        await wait_until(lambda: len(got.of(RawObjects)) >= 2, 10, "reads")
    due = [r for r in got.of(RawObjects) if r.ts.year == 2025]
    assert [r.ts for r in due] == [datetime(2025, 12, 31, 23, 0, tzinfo=UTC)]  # 2026-01-01 00:00 in Berlin


async def test_a_lost_telegram_is_asked_again_with_the_same_fcb() -> None:
    """The second of three telegrams is lost: the master repeats REQ_UD2 with the same FCB, so the
    slave sends that telegram again, not its third; without retries the read fails."""
    from drivers.mbus.link import Link
    from drivers.mbus.master import Master
    from gateway.errors import MeterTimeout

    slave = heat(7, 87654321)
    slave.per_telegram = 3
    async with tcp_bus(Bus([slave])) as settings:
        master = Master(Link(settings), 0.2, "t", retries=1)
        clean = await master.read(7, "t")
        slave.faults.drop_after = 2  # SND_NKE's E5 and the first telegram get through, the second is lost
        again = await master.read(7, "t")
        assert master.retried == 1
        assert [r.code for t in again.telegrams for r in t.records] == [r.code for t in clean.telegrams for r in t.records]
        assert len(again.telegrams) == 3
        slave.faults.drop_after = 2
        master.retries = 0
        try:
            await master.read(7, "t")
        except MeterTimeout:
            pass
        else:
            raise AssertionError("a lost telegram without retries must fail the read")
        master.link.close()


async def test_a_meter_exchange_is_an_event() -> None:
    """The meter at primary 5 is exchanged: a new id, its counter from zero. The read goes on (the
    readings are what the new meter shows) and an anomaly says what happened."""
    meter = water(5, 12345678, volume_l=99000)
    got = Got()
    async with tcp_bus(Bus([meter])) as link, polling(MBusPoller("b", link, [MBusTarget("W", 5, None, 0.1)], got,
                                                                 timeout=0.3)):
        await wait_until(lambda: len(got.of(RawObjects)) >= 2, 10, "reads")
        meter.ident, meter.values["volume_l"] = 87650000, 3
        await wait_until(lambda: any("exchanged" in e.detail for e in got.of(Event)), 10, "exchange event")
    event = next(e for e in got.of(Event) if "exchanged" in e.detail)
    assert "87650000" in event.detail and "12345678" in event.detail and event.kind is EventKind.ANOMALY
    assert ("volume", Decimal("0.003"), "m3") in got.of(RawObjects)[-1].values


def test_a_due_day_value_is_a_recorded_value_vee_does_not_call_stale() -> None:
    """Storage 1 (last due day) is the meter's own record of an earlier date: its reading has no receive
    time to be judged against, so it is stored valid, not stale_ts / suspect; the current value
    keeps its receive time and is judged as ever."""
    from gateway.model import Quality, Status
    from gateway.validate.validator import Validator

    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    due = datetime(2026, 1, 1, tzinfo=UTC)
    reader = ObjectReader(object_maps()["mbus_water"], Source.MBUS)
    current = reader.read(RawObjects("W-1", now, now, (("volume", Decimal("54.321"), "m3"),)))
    recorded = reader.read(RawObjects("W-1", due, now, (("volume", Decimal("10"), "m3"),), recorded=True))
    stale = reader.read(RawObjects("W-2", due, now, (("volume", Decimal("10"), "m3"),)))
    assert [r.received_at for r in recorded.readings] == [None]
    validator = Validator()
    got, _ = validator.validate([*current.readings, *recorded.readings, *stale.readings])
    by_meter_ts = {(r.meter_id, r.ts): r for r in got}
    assert by_meter_ts[("W-1", due)].status is Status.VALID
    assert not by_meter_ts[("W-1", due)].quality & Quality.STALE_TS
    assert by_meter_ts[("W-2", due)].quality & Quality.STALE_TS  # the same value with a receive time: stale
