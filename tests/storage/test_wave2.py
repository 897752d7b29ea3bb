"""Wave-2 store methods, run against every backend: feed, verification, estimates,
consumption, billing reads, history, commands, idempotent events and dead letters, retention."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from gateway.errors import InvalidRequest, NotFound
from gateway.model import (
    Batch,
    Channel,
    Command,
    CommandKind,
    CommandStatus,
    Quality,
    Reading,
    Source,
    Status,
)
from storage.base import Store
from tests.storage.samples import T0, balance, deadletter, event, reading

H = timedelta(hours=1)
DAY = timedelta(days=1)
MIDNIGHT = datetime(2024, 3, 1, tzinfo=UTC)  # T0's day


def at(hours: float, value: float, **fields: Any) -> Reading:
    """An energy_import read `hours` after MIDNIGHT."""
    r = reading(minutes=0, value=value, **fields)
    return dataclasses.replace(r, ts=MIDNIGHT + timedelta(hours=hours))


async def _feed_all(store: Store, after: int = 0, limit: int = 7) -> tuple[list[Reading], int]:
    got: list[Reading] = []
    for _ in range(1000):
        page = await store.feed(after=after, limit=limit)
        got += page.items
        if not page.items:
            return got, after
        after = page.next_after
    raise AssertionError("feed did not end")


# -- feed ------------------------------------------------------------------------
async def test_feed_pages_every_reading_once_in_seq_order(store: Store) -> None:
    await store.write(Batch(readings=[reading(minutes=m, value=m) for m in range(10)]))
    await store.write(Batch(readings=[reading(channel=Channel.POWER, minutes=m) for m in range(5)]))

    got, cursor = await _feed_all(store)

    assert len(got) == 15
    seqs = [r.seq for r in got if r.seq is not None]
    assert seqs == sorted(seqs) and len(set(seqs)) == 15
    assert cursor == seqs[-1]
    assert (await store.feed(after=cursor)).items == []
    assert (await store.feed(after=cursor)).next_after == cursor


async def test_verification_puts_a_reading_back_in_the_feed(store: Store) -> None:
    await store.write(Batch(readings=[reading(minutes=m, value=m, status=Status.SUSPECT) for m in range(3)]))
    _, cursor = await _feed_all(store)

    verified = await store.set_status("M-1", Channel.ENERGY_IMPORT, T0 + timedelta(minutes=1), Status.VERIFIED,
                                      note="checked on site", by="tech-7")  # fmt: skip

    assert verified.status is Status.VERIFIED and verified.value == 1
    assert verified.seq is not None and verified.seq > cursor
    page = await store.feed(after=cursor)
    assert [(r.ts, r.status) for r in page.items] == [(verified.ts, Status.VERIFIED)]
    stored = await store.readings("M-1", start=T0, end=T0 + H)
    assert [r.status for r in stored] == [Status.SUSPECT, Status.VERIFIED, Status.SUSPECT]


async def test_set_status_of_a_missing_reading_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="M-1/energy_import"):
        await store.set_status("M-1", Channel.ENERGY_IMPORT, T0, Status.REJECTED, note="x", by="y")
    with pytest.raises(InvalidRequest, match="not a verdict"):
        await store.set_status("M-1", Channel.ENERGY_IMPORT, T0, Status.ESTIMATED, note="x", by="y")


async def test_concurrent_writers_and_a_tailing_reader_see_every_row_once(store: Store, second_store: Store) -> None:
    """Two gateways writing at once while a reader follows the feed: nothing skipped."""
    seen: list[Reading] = []
    done = asyncio.Event()

    async def writer(s: Store, meter_id: str) -> None:
        for b in range(15):
            await s.write(Batch(readings=[reading(meter_id=meter_id, minutes=b * 10 + i, value=i) for i in range(10)]))

    async def reader() -> None:
        after = 0
        while True:
            finished = done.is_set()
            page = await store.feed(after=after, limit=25)
            seen.extend(page.items)
            after = page.next_after
            if finished and not page.items:
                return
            await asyncio.sleep(0)

    tail = asyncio.create_task(reader())
    await asyncio.gather(writer(store, "A"), writer(second_store, "B"), writer(store, "C"), writer(second_store, "D"))
    done.set()
    await asyncio.wait_for(tail, 30)

    keys = [(r.meter_id, r.ts) for r in seen]
    assert len(keys) == len(set(keys)) == 4 * 150
    assert [r.seq for r in seen] == sorted(r.seq for r in seen if r.seq is not None)


# -- estimates -------------------------------------------------------------------
async def test_real_reading_replaces_an_estimate_and_reappears_in_the_feed(store: Store) -> None:
    estimate = reading(value=10.0, status=Status.ESTIMATED, source=Source.ESTIMATE, quality=Quality.ESTIMATED)
    await store.write(Batch(readings=[estimate, reading(minutes=1, value=11.0)]))
    _, cursor = await _feed_all(store)

    real = reading(value=10.4, quality=Quality.GAP, source=Source.MODBUS)
    result = await store.write(Batch(readings=[real]))

    assert (result.readings_replaced, result.readings_inserted, result.conflicts) == (1, 0, [])
    [stored, _] = await store.readings("M-1", start=T0, end=T0 + H)
    assert (stored.value, stored.status, stored.source, stored.quality) == (10.4, Status.VALID, Source.MODBUS,
                                                                              Quality.GAP)  # fmt: skip
    assert [r.value for r in (await store.feed(after=cursor)).items] == [10.4]


async def test_an_estimate_never_overwrites_a_real_reading(store: Store) -> None:
    await store.write(Batch(readings=[reading(value=10.0)]))
    late = reading(value=99.0, status=Status.ESTIMATED, source=Source.ESTIMATE)

    result = await store.write(Batch(readings=[late]))

    assert (result.readings_inserted, result.readings_duplicate, result.readings_replaced) == (0, 1, 0)
    assert result.conflicts == []
    assert [r.value for r in await store.readings("M-1", start=T0, end=T0 + H)] == [10.0]


# -- idempotent events and dead letters -------------------------------------------
async def test_events_and_dead_letters_replayed_are_stored_once(store: Store) -> None:
    batch = Batch(events=[event(0), event(0, meter_id=None), event(1)], deadletters=[deadletter(0), deadletter(2)],
                  balances=[balance()])  # fmt: skip
    first = await store.write(batch)
    again = await store.write(batch)

    assert (first.events_inserted, first.deadletters_inserted) == (3, 2)
    assert (again.events_inserted, again.deadletters_inserted, again.balances_inserted) == (0, 0, 0)
    assert len(await store.events()) == 3
    assert len(await store.deadletters()) == 2
    # A different detail at the same ts is a different event.
    other = dataclasses.replace(event(0), detail="something else")
    assert (await store.write(Batch(events=[other]))).events_inserted == 1


# -- consumption ------------------------------------------------------------------
async def test_hourly_consumption_with_boundary_reads(store: Store) -> None:
    await store.write(Batch(readings=[at(h / 4, 100 + h) for h in range(0, 13)]))  # every 15 min, +1 each

    got = await store.consumption("M-1", Channel.ENERGY_IMPORT, start=MIDNIGHT, end=MIDNIGHT + 3 * H, bucket="hour")

    assert [b.start for b in got] == [MIDNIGHT, MIDNIGHT + H, MIDNIGHT + 2 * H]
    assert [b.value for b in got] == [4.0, 4.0, 4.0]
    assert got[0].first_read is not None and got[0].first_read.ts == MIDNIGHT
    assert got[0].last_read is not None and got[0].last_read.ts == MIDNIGHT + H  # closes one, opens the next
    assert not any(b.estimated or b.suspect or b.gap for b in got)


async def test_consumption_across_a_rollover_and_a_gap(store: Store) -> None:
    await store.write(Batch(readings=[
        at(0, 99_990.0), at(1, 99_995.0),
        at(2, 3.0, quality=Quality.ROLLOVER, note="modulus=100000"),   # wrapped: +8
        # 3:00 .. 5:00 missing; the 6:00 read says so
        at(6, 23.0, quality=Quality.GAP),
        at(7, 25.0),
    ]))  # fmt: skip

    got = await store.consumption("M-1", Channel.ENERGY_IMPORT, start=MIDNIGHT, end=MIDNIGHT + 7 * H, bucket="hour")

    values = [b.value for b in got]
    assert values == [5.0, 8.0, None, None, None, 20.0, 2.0]  # the gap's consumption lands where reads resume
    assert got[1].suspect is False and got[5].gap is True
    total = await store.consumption("M-1", Channel.ENERGY_IMPORT, start=MIDNIGHT, end=MIDNIGHT + 7 * H, bucket="day")
    assert [b.value for b in total] == [35.0]  # 25 - 99990 + 100000


async def test_consumption_marks_estimates_and_ignores_rejected_reads(store: Store) -> None:
    await store.write(Batch(readings=[
        at(0, 10.0), at(1, 11.0, status=Status.ESTIMATED, source=Source.ESTIMATE),
        at(2, 12.0), at(2.5, 999.0, status=Status.REJECTED, quality=Quality.OUT_OF_RANGE), at(3, 13.0),
    ]))  # fmt: skip

    got = await store.consumption("M-1", Channel.ENERGY_IMPORT, start=MIDNIGHT, end=MIDNIGHT + 3 * H, bucket="hour")

    assert [b.value for b in got] == [1.0, 1.0, 1.0]
    assert [b.estimated for b in got] == [True, True, False]
    assert [b.suspect for b in got] == [False, False, True]  # a rejected read lies inside the third hour


async def test_daily_consumption_in_a_time_zone_across_dst(store: Store) -> None:
    """Europe/Berlin switches to summer time on 2024-03-31: that day has 23 hours."""
    start = datetime(2024, 3, 29, 23, tzinfo=UTC)  # 2024-03-30 00:00 in Berlin
    await store.write(Batch(readings=[
        dataclasses.replace(reading(value=float(h)), ts=start + h * H) for h in range(0, 24 + 23 + 2)
    ]))  # fmt: skip

    got = await store.consumption("M-1", Channel.ENERGY_IMPORT, start=start, end=start + 47 * H, bucket="day",
                                  tz="Europe/Berlin")  # fmt: skip

    assert [(b.start, b.value) for b in got] == [(start, 24.0), (start + 24 * H, 23.0)]


async def test_monthly_consumption(store: Store) -> None:
    await store.write(Batch(readings=[
        dataclasses.replace(reading(value=v), ts=datetime(2024, m, 1, tzinfo=UTC))
        for m, v in ((1, 0.0), (2, 310.0), (3, 600.0), (4, 910.0))
    ]))  # fmt: skip

    got = await store.consumption("M-1", Channel.ENERGY_IMPORT, start=datetime(2024, 1, 15, tzinfo=UTC),
                                  end=datetime(2024, 3, 2, tzinfo=UTC), bucket="month")  # fmt: skip

    assert [(b.start.month, b.value) for b in got] == [(1, 310.0), (2, 290.0), (3, 310.0)]


@pytest.mark.parametrize(
    ("channel", "bucket", "tz", "message"),
    [
        (Channel.ENERGY_IMPORT, "week", "UTC", "bucket 'week' is not one of hour, day, month"),
        (Channel.POWER, "day", "UTC", "channel 'power' is not a cumulative register"),
        (Channel.ENERGY_IMPORT, "day", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
async def test_bad_consumption_requests_say_what_is_wrong(store: Store, channel: Channel, bucket: str, tz: str,
                                                          message: str) -> None:  # fmt: skip
    with pytest.raises(InvalidRequest, match=message):
        await store.consumption("M-1", channel, start=MIDNIGHT, end=MIDNIGHT + DAY, bucket=bucket, tz=tz)


async def test_too_many_buckets_are_refused(store: Store) -> None:
    with pytest.raises(InvalidRequest, match="more than 10000 hour buckets"):
        await store.consumption("M-1", Channel.ENERGY_IMPORT, start=MIDNIGHT, end=MIDNIGHT + 500 * DAY, bucket="hour")


# -- billing reads ------------------------------------------------------------------
async def test_billing_read_skips_suspect_reads_and_counts_a_rollover(store: Store) -> None:
    await store.write(Batch(readings=[
        at(-1, 99_000.0),
        at(0, 99_500.0, status=Status.SUSPECT, quality=Quality.REGRESSION),  # not billed from
        at(5, 400.0, quality=Quality.ROLLOVER, note="rollover; modulus=100000"),
        at(10, 700.0),
        at(30, 900.0),
    ]))  # fmt: skip

    bill = await store.billing_read("M-1", Channel.ENERGY_IMPORT, start=MIDNIGHT, end=MIDNIGHT + DAY)

    assert bill.opening is not None and bill.opening.value == 99_000.0
    assert bill.closing is not None and bill.closing.value == 700.0
    assert bill.consumption == 1_700.0
    assert bill.suspect is True and bill.estimated is False
    # The suspect read is in the bill's flags, with counts (issue 27 item 4; the flags hid it before).
    assert bill.flags == ["regression", "rollover", "suspect"]
    assert bill.flag_counts == {"regression": 1, "rollover": 1, "suspect": 1}
    empty = await store.billing_read("M-2", Channel.ENERGY_IMPORT, start=MIDNIGHT, end=MIDNIGHT + DAY)
    assert (empty.opening, empty.closing, empty.consumption) == (None, None, None)


# -- history and commands ---------------------------------------------------------------
async def test_cumulative_history_is_ordered_by_series_then_time(store: Store) -> None:
    await store.write(Batch(readings=[
        reading("M-2", minutes=5, value=2), reading("M-1", minutes=9, value=3), reading("M-1", minutes=1, value=1),
        reading("M-1", Channel.POWER, minutes=2), reading("M-1", minutes=-60, value=0),
    ]))  # fmt: skip

    got = await store.cumulative_history(since=T0)

    assert [(r.meter_id, r.value) for r in got] == [("M-1", 1), ("M-1", 3), ("M-2", 2)]


async def test_commands_are_saved_updated_and_listed(store: Store) -> None:
    c1 = Command("corr-1", "P-1", CommandKind.TOPUP, T0, amount=Decimal("100.50"), reference="pay-9")
    c2 = Command("corr-2", "P-1", CommandKind.DISCONNECT, T0 + H)
    c3 = Command("corr-3", "P-2", CommandKind.RECONNECT, T0 + 2 * H)
    for c in (c1, c2, c3):
        await store.save_command(c)
    done = dataclasses.replace(c1, status=CommandStatus.ACKNOWLEDGED, updated_at=T0 + H, detail="applied")

    await store.save_command(done)

    assert await store.get_command("corr-1") == done
    assert await store.get_command("nope") is None
    assert await store.commands() == [c3, c2, done]
    assert await store.commands(meter_id="P-1", limit=1) == [c2]


# -- retention -------------------------------------------------------------------------
async def test_retention_removes_only_old_data(store_target: tuple[str, str]) -> None:
    from tests.storage.backends import open_backend

    retained = await open_backend(*store_target, retention=timedelta(days=30))
    try:
        await retained.migrate()
        now = datetime(2024, 6, 1, tzinfo=UTC)
        old, new = now - timedelta(days=40), now - timedelta(days=5)
        await retained.write(Batch(
            readings=[dataclasses.replace(reading(minutes=i), ts=t + timedelta(minutes=i)) for t in (old, new)
                      for i in range(3)],
            balances=[dataclasses.replace(balance(), ts=t) for t in (old, new)],
            events=[dataclasses.replace(event(), ts=t) for t in (old, new)],
            deadletters=[dataclasses.replace(deadletter(), ts=t) for t in (old, new)],
        ))  # fmt: skip

        result = await retained.apply_retention(now)

        assert result.mode == {"sqlite": "delete", "timescale": "drop_chunks", "postgresql": "delete"}[store_target[0]]
        assert result.cutoff == now - timedelta(days=30)
        left = await retained.readings("M-1", start=old - DAY, end=now)
        assert [r.ts for r in left] == [new + timedelta(minutes=i) for i in range(3)]
        assert [b.ts for b in await retained.balances("P-1", start=old - DAY, end=now)] == [new]
        assert [e.ts for e in await retained.events()] == [new]
        assert [d.ts for d in await retained.deadletters()] == [new]
        assert (await retained.apply_retention(now)).removed.get("readings", 0) == 0
    finally:
        await retained.close()


async def test_without_retention_nothing_is_removed(store: Store) -> None:
    await store.write(Batch(readings=[reading()]))
    assert (await store.apply_retention(datetime(2100, 1, 1, tzinfo=UTC))).mode == "off"
    assert len(await store.readings("M-1", start=T0, end=T0 + H)) == 1


