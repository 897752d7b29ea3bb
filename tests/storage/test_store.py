"""The `Store` contract, run against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, timedelta

import pytest

from gateway.errors import SinkError, SinkUnavailable
from gateway.model import Batch, Channel, EventKind, Kind, MeterStatus, Reading
from storage.base import Store
from storage.records import LastValue, WriteResult
from tests.storage.backends import open_backend
from tests.storage.samples import T0, balance, deadletter, event, full_reading, meter, reading, record_latest_batches

DAY = timedelta(days=1)
EXPECTED_MODE = {"sqlite": "sqlite", "timescale": "timescaledb-apache", "postgresql": "postgresql"}


def _without_seq(r: Reading) -> Reading:
    return dataclasses.replace(r, seq=None)


async def _all(store: Store, meter_id: str) -> list[Reading]:
    return await store.readings(meter_id, start=T0 - 365 * DAY, end=T0 + 365 * DAY, limit=100_000)


async def test_is_a_store_with_the_expected_mode(store: Store, store_target: tuple[str, str]) -> None:
    assert isinstance(store, Store)
    assert store.mode == EXPECTED_MODE[store_target[0]]


async def test_migrate_twice_changes_nothing(store: Store) -> None:
    await store.write(Batch(readings=[reading()]))
    await store.migrate()
    await store.migrate()
    assert [r.value for r in await _all(store, "M-1")] == [1.0]


async def test_empty_batch_is_a_no_op(store: Store) -> None:
    assert await store.write(Batch()) == WriteResult()


async def test_reading_round_trips_every_field(store: Store) -> None:
    original = full_reading()
    result = await store.write(Batch(readings=[original]))
    assert result.readings_inserted == 1

    [got] = await _all(store, "M-ROUND")
    assert _without_seq(got) == original  # same instant, flags, enums, exact float
    assert got.note == original.note  # note is compare=False in the dataclass
    assert got.seq is not None and got.seq > 0
    assert got.value == 0.1 + 0.2
    assert got.ts.utcoffset() == timedelta(0) and got.ts.tzinfo is not None
    assert got.ts == original.ts.astimezone(UTC)
    assert got.received_at is not None and got.received_at.utcoffset() == timedelta(0)
    assert type(got.channel) is Channel and type(got.kind) is Kind


async def test_balance_round_trips_exact_decimals(store: Store) -> None:
    original = balance(amount="-0.10")
    assert (await store.write(Batch(balances=[original]))).balances_inserted == 1

    got = await store.latest_balance("P-1")
    assert got is not None and got.seq is not None
    assert dataclasses.replace(got, seq=None) == original
    assert str(got.balance) == "-0.10" and str(got.debt) == "-0.005"
    assert got.last_topup_ts is not None and got.last_topup_ts.tzinfo is not None
    assert await store.latest_balance("P-unknown") is None


async def test_balances_range_is_ordered_and_half_open(store: Store) -> None:
    await store.write(Batch(balances=[balance(minutes=m, amount=f"{100 - m}.00") for m in (30, 0, 10, 20)]))

    got = await store.balances("P-1", start=T0, end=T0 + timedelta(minutes=30))
    assert [b.balance for b in got] == [100, 90, 80]  # 30 min is excluded
    latest = await store.latest_balance("P-1")
    assert latest is not None and str(latest.balance) == "70.00"


async def test_events_and_deadletters_are_appended_most_recent_first(store: Store) -> None:
    events = [event(0), event(5, kind=EventKind.COMM_RESTORED), event(2, meter_id="M-2"), event(9, meter_id=None)]
    letters = [deadletter(1), deadletter(3, reason="unknown_meter", meter_id="P-9")]
    result = await store.write(Batch(events=events, deadletters=letters))
    assert (result.events_inserted, result.deadletters_inserted) == (4, 2)

    assert await store.events() == [events[3], events[1], events[2], events[0]]
    assert await store.events(meter_id="M-1") == [events[1], events[0]]
    assert await store.events(kind=EventKind.COMM_RESTORED) == [events[1]]
    assert await store.events(limit=1) == [events[3]]
    assert await store.deadletters() == [letters[1], letters[0]]
    assert await store.deadletters(reason="malformed_json") == [letters[0]]
    assert await store.deadletters(meter_id="P-9") == [letters[1]]


async def test_same_batch_twice_is_idempotent(store: Store) -> None:
    batch = Batch(
        readings=[reading(channel=c, minutes=m, value=m) for c in (Channel.ENERGY_IMPORT, Channel.POWER)
                  for m in range(5)],
        balances=[balance(minutes=m) for m in range(3)],
    )  # fmt: skip
    first = await store.write(batch)
    second = await store.write(batch)

    assert (first.readings_inserted, first.readings_duplicate, first.balances_inserted) == (10, 0, 3)
    assert (second.readings_inserted, second.readings_duplicate, second.balances_inserted) == (0, 10, 0)
    assert first.conflicts == second.conflicts == []
    stored = await _all(store, "M-1")
    assert len(stored) == 10
    assert len({r.seq for r in stored}) == 10
    assert len(await store.balances("P-1", start=T0, end=T0 + DAY)) == 3


async def test_different_value_for_a_stored_key_is_a_conflict_and_the_first_wins(store: Store) -> None:
    await store.write(Batch(readings=[reading(value=10.0)]))
    changed, new = reading(value=11.0), reading(minutes=1, value=12.0)

    result = await store.write(Batch(readings=[changed, new]))

    assert result.conflicts == [changed]
    assert (result.readings_inserted, result.readings_duplicate) == (1, 0)
    assert [r.value for r in await _all(store, "M-1")] == [10.0, 12.0]


async def test_conflict_inside_one_batch_keeps_the_first(store: Store) -> None:
    first, again, other = reading(value=1.0), reading(value=1.0), reading(value=2.0)

    result = await store.write(Batch(readings=[first, again, other]))

    assert result.readings_inserted == 1
    assert result.readings_duplicate == 1
    assert result.conflicts == [other]
    assert [r.value for r in await _all(store, "M-1")] == [1.0]


async def test_seq_follows_batch_order_and_grows_across_batches(store: Store) -> None:
    await store.write(Batch(readings=[reading(minutes=m) for m in (3, 1, 2)]))
    await store.write(Batch(readings=[reading(minutes=0)]))

    by_minute = {int((r.ts - T0).total_seconds() // 60): r.seq for r in await _all(store, "M-1")}
    assert by_minute[3] < by_minute[1] < by_minute[2] < by_minute[0]  # type: ignore[operator]


async def test_concurrent_overlapping_writes_store_each_key_once(store: Store, second_store: Store) -> None:
    """Two gateways (two stores on one database) writing overlapping batches at once."""
    a = Batch(readings=[reading(minutes=m) for m in range(0, 60)])
    b = Batch(readings=[reading(minutes=m) for m in range(30, 90)])

    results = await asyncio.gather(store.write(a), second_store.write(b), store.write(b))

    assert sum(r.readings_inserted for r in results) == 90
    assert sum(r.readings_duplicate for r in results) == 180 - 90
    assert all(r.conflicts == [] for r in results)
    assert len(await _all(store, "M-1")) == 90


async def test_latest_readings_gives_the_newest_of_each_channel(store: Store) -> None:
    await store.write(Batch(readings=[
        reading(channel=Channel.POWER, minutes=m, value=m) for m in range(10)
    ] + [
        reading(channel=Channel.ENERGY_IMPORT, minutes=m, value=100 + m) for m in (5, 1, 3)
    ] + [
        reading(channel=Channel.VOLTAGE_L1, minutes=2, value=230.5),
        reading(meter_id="M-2", channel=Channel.POWER, minutes=20, value=99),
    ]))  # fmt: skip

    latest = await store.latest_readings("M-1")

    assert [(r.channel, r.value) for r in latest] == [
        (Channel.ENERGY_IMPORT, 105),
        (Channel.POWER, 9),
        (Channel.VOLTAGE_L1, 230.5),
    ]
    assert all(r.seq is not None and r.meter_id == "M-1" for r in latest)
    assert await store.latest_readings("M-none") == []


async def test_latest_readings_asked_at_once_each_get_their_own_meter(store: Store) -> None:
    """Many callers at once (as the API under load): TimescaleDB answers those that queue
    behind the running queries together (storage.coalesce); each must still get exactly
    its own meter's channels, the same as asked alone, and the unknown meter nothing."""
    meters = [f"M-{i:02d}" for i in range(24)]
    await store.write(Batch(readings=[
        reading(meter_id=m, channel=c, minutes=k, value=i * 1000 + k)
        for i, m in enumerate(meters) for c in (Channel.POWER, Channel.VOLTAGE_L1)[: 1 + i % 2] for k in range(3)
    ]))  # fmt: skip
    # Meter i has power (and, odd i, voltage_l1) at minutes 0-2: the latest is minute 2, i * 1000 + 2.
    expected = {m: [(c, i * 1000 + 2.0) for c in (Channel.POWER, Channel.VOLTAGE_L1)[: 1 + i % 2]]
                for i, m in enumerate(meters)}  # fmt: skip
    asked = [*meters, "M-none", *meters[::3]]
    batches = record_latest_batches(store)  # TimescaleDB's coalescer; SQLite answers one at a time

    at_once = await asyncio.gather(*(store.latest_readings(m) for m in asked))

    assert [[(r.channel, r.value) for r in got] for got in at_once] == [expected.get(m, []) for m in asked]
    assert all(r.meter_id == m and r.ts == T0 + timedelta(minutes=2) for m, got in zip(asked, at_once, strict=True)
               for r in got)  # fmt: skip
    if batches is not None:  # the queued callers were answered together, every meter asked probed
        assert len(batches) < len(asked) and max(map(len, batches)) > 1, batches
        assert {k for b in batches for k in b} == set(asked), batches


async def test_readings_pages_cover_the_range_once(store: Store) -> None:
    channels = (Channel.ENERGY_IMPORT, Channel.POWER, Channel.VOLTAGE_L1)
    written = [reading(channel=c, minutes=m, value=m) for m in range(40) for c in channels]
    written.append(reading(meter_id="M-2", minutes=5))
    await store.write(Batch(readings=written))
    start, end = T0 + timedelta(minutes=3), T0 + timedelta(minutes=37)

    pages: list[list[Reading]] = []
    after = None
    for _ in range(100):  # a bound, so a cursor that does not advance fails instead of hanging
        page = await store.readings("M-1", start=start, end=end, limit=7, after=after)
        if not page:
            break
        pages.append(page)
        after = (page[-1].ts, page[-1].channel.value)

    got = [(r.ts, r.channel) for page in pages for r in page]
    expected = sorted((r.ts, r.channel) for r in written if r.meter_id == "M-1" and start <= r.ts < end)
    assert len(expected) == 34 * 3
    assert got == expected  # ordered by (ts, channel), nothing skipped, nothing repeated
    assert all(len(p) == 7 for p in pages[:-1])


async def test_readings_of_one_channel_page_by_ts(store: Store) -> None:
    await store.write(Batch(readings=[
        reading(channel=c, minutes=m, value=m) for m in range(10) for c in (Channel.POWER, Channel.FREQUENCY)
    ]))  # fmt: skip

    first = await store.readings("M-1", start=T0, end=T0 + DAY, channel=Channel.POWER, limit=4)
    rest = await store.readings("M-1", start=T0, end=T0 + DAY, channel=Channel.POWER, limit=100,
                                after=(first[-1].ts, first[-1].channel))  # fmt: skip

    assert [r.value for r in first + rest] == list(range(10))
    assert {r.channel for r in first + rest} == {Channel.POWER}


async def test_last_cumulative_gives_the_newest_cumulative_value_per_meter_channel(store: Store) -> None:
    await store.write(Batch(readings=[
        reading("M-1", Channel.ENERGY_IMPORT, minutes=1, value=10.5),
        reading("M-1", Channel.ENERGY_IMPORT, minutes=9, value=12.25),
        reading("M-1", Channel.ENERGY_IMPORT, minutes=4, value=11.0),
        reading("M-1", Channel.ENERGY_EXPORT, minutes=2, value=3.0),
        reading("M-1", Channel.POWER, minutes=20, value=7.0),
        reading("W-7", Channel.VOLUME, minutes=3, value=1234.567),
        reading("W-7", Channel.FLOW, minutes=3, value=0.4),
    ]))  # fmt: skip

    assert await store.last_cumulative() == [
        LastValue("M-1", Channel.ENERGY_EXPORT, T0 + timedelta(minutes=2), 3.0),
        LastValue("M-1", Channel.ENERGY_IMPORT, T0 + timedelta(minutes=9), 12.25),
        LastValue("W-7", Channel.VOLUME, T0 + timedelta(minutes=3), 1234.567),
    ]


async def test_last_cumulative_of_an_empty_store_is_empty(store: Store) -> None:
    assert await store.last_cumulative() == []


async def test_meters_round_trip_and_search(store: Store) -> None:
    meters = [
        meter("M-1234", device_number="SDM-0001", consumer_number="C-900"),
        meter("M-5678", device_number="SDM-0002", consumer_number="C-901"),
        meter("P-0042", device_number="PAYG_77", consumer_number=None, payg=True, tags={}),
        meter("W-0007", device_number=None, consumer_number="ACC-1234-X", installed_at=None, location=None),
    ]
    await store.upsert_meters(meters)

    assert await store.get_meter("M-5678") == meters[1]
    assert await store.get_meter("nope") is None
    assert await store.list_meters() == meters

    async def ids(**kwargs: object) -> list[str]:
        return [m.meter_id for m in await store.list_meters(**kwargs)]  # type: ignore[arg-type]

    assert await ids(search="m-12") == ["M-1234"]  # meter number, any case
    assert await ids(search="1234") == ["M-1234", "W-0007"]  # meter number and consumer number
    assert await ids(search="sdm-0002") == ["M-5678"]  # device number
    assert await ids(search="c-90") == ["M-1234", "M-5678"]  # consumer number
    assert await ids(search="_") == ["P-0042"]  # _ is a character here, not a wildcard
    assert await ids(search="%") == []
    assert await ids(limit=2) == ["M-1234", "M-5678"]
    assert await ids(after="M-5678", limit=10) == ["P-0042", "W-0007"]
    assert await ids(search="-", after="M-1234", limit=1) == ["M-5678"]


async def test_upsert_meters_updates_existing(store: Store) -> None:
    await store.upsert_meters([meter("M-1", consumer_number="C-1"), meter("M-2")])
    moved = meter("M-1", consumer_number="C-2", status=MeterStatus.MAINTENANCE, tags={"feeder": "F9"})

    await store.upsert_meters([moved])

    assert await store.get_meter("M-1") == moved
    assert [m.meter_id for m in await store.list_meters()] == ["M-1", "M-2"]


async def test_write_before_migrate_is_a_sink_error(store_target: tuple[str, str]) -> None:
    fresh = await open_backend(*store_target)
    try:
        with pytest.raises(SinkError, match="migrate") as info:
            await fresh.write(Batch(readings=[reading()]))
        assert not isinstance(info.value, SinkUnavailable)  # retrying will not help
    finally:
        await fresh.close()
