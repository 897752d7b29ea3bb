"""The account system's rules (storage/consumption.py), run against every backend: periods that
have not begun or not ended, the reads a bill shows, real reads before estimates, move reads
derived from the readings, the first period, installation dates (issue 27 items 2, 4-7)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.model import Batch, Channel, Quality, Reading, Source, Status
from gateway.runtime.config import parse_config
from gateway.runtime.gateway import open_configured_store
from storage.base import Store
from storage.boundary import estimate_method
from storage.records import Conflict
from tests.storage.samples import meter, reading

S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)
DAY = timedelta(days=1)
B = datetime(2025, 6, 1, tzinfo=UTC)  # a period's start, long past
EI = Channel.ENERGY_IMPORT


def at(t: datetime, value: float, meter_id: str = "M-1", **fields: Any) -> Reading:
    """An energy_import read at `t`."""
    return dataclasses.replace(reading(meter_id, value=value), ts=t, received_at=t + S, **fields)


def estimate(t: datetime, value: float, meter_id: str = "M-1") -> Reading:
    """An estimate as VEE stores one (linear interpolation)."""
    return at(t, value, meter_id, status=Status.ESTIMATED, source=Source.ESTIMATE, quality=Quality.ESTIMATED,
              note="estimate=linear")


def ts_of(r: Reading | None) -> datetime | None:
    return None if r is None else r.ts


# -- item 2: periods that have not begun, or not ended -------------------------------------
async def test_a_period_that_has_not_begun_is_refused(store: Store) -> None:
    # A bill for it was a clean zero (opening = closing = the latest read); consumption was null.
    await store.write(Batch(readings=[at(datetime.now(UTC) - H, 100.0)]))
    later = datetime.now(UTC) + 200 * DAY

    with pytest.raises(InvalidRequest, match="is in the future") as bill:
        await store.billing_read("M-1", EI, start=later, end=later + 31 * DAY)
    with pytest.raises(InvalidRequest, match="is in the future") as buckets:
        await store.consumption("M-1", EI, start=later, end=later + 31 * DAY, bucket="day")

    assert getattr(bill.value, "field", None) == getattr(buckets.value, "field", None) == "start"


async def test_a_period_that_has_not_ended_is_measured_up_to_now_and_says_so(store: Store) -> None:
    now = datetime.now(UTC)
    reads = [at(now - 3 * H + MIN, 10.0), at(now - 2 * H, 12.0), at(now - H, 15.0), at(now - 10 * MIN, 16.0)]
    await store.write(Batch(readings=reads))
    start, end = now - 3 * H, now + 3 * H

    bill = await store.billing_read("M-1", EI, start=start, end=end)
    hourly = await store.consumption("M-1", EI, start=start, end=end, bucket="hour")
    months = await store.consumption("M-1", EI, start=start, end=end, bucket="month")

    assert bill.consumption == 6.0 and not bill.complete and bill.as_of == reads[-1].ts
    # Billing and consumption agree: the buckets add up to the bill, and say they are not over.
    assert sum(b.value or 0 for b in hourly) == sum(b.value or 0 for b in months) == 6.0
    assert not months[-1].complete and ts_of(months[-1].last_read) == reads[-1].ts
    future = [b for b in hourly if b.start > now]
    assert len(future) >= 2 and all(b.value is None and not b.complete for b in future)
    assert all(b.complete for b in hourly if b.end <= now)


async def test_billing_and_consumption_agree_for_the_same_period(store: Store) -> None:
    end = B + 30 * DAY
    await store.write(Batch(readings=[
        at(B + 2 * S, 500.0),  # the first read, 2 s after the start
        *[at(B + d * DAY, 500.0 + 10 * d) for d in range(1, 30)],
        at(end - 5 * H, 800.0, status=Status.REJECTED, quality=Quality.OUT_OF_RANGE),
        at(end - H, 799.0, status=Status.SUSPECT, quality=Quality.SPIKE),  # never closes a bill nor a bucket
        at(end + H, 801.0),
    ]))  # fmt: skip

    bill = await store.billing_read("M-1", EI, start=B, end=end)
    month = await store.consumption("M-1", EI, start=B, end=end, bucket="month")
    days = await store.consumption("M-1", EI, start=B, end=end, bucket="day")

    assert bill.consumption == 290.0 and bill.opening_after_start and ts_of(bill.opening) == B + 2 * S
    assert [b.value for b in month] == [290.0] and month[0].opening_after_start
    assert sum(b.value or 0 for b in days) == 290.0 and days[0].opening_after_start and days[0].value == 10.0
    assert bill.suspect and month[0].suspect and days[-1].suspect


# -- item 4: bills show every read that matters ------------------------------------------------
async def test_a_bill_counts_suspect_and_rejected_reads_after_its_closing_read(store: Store) -> None:
    # The finding: 25 suspect and 2 rejected reads in the last 44 s, and the bill said
    # suspect: false, flags: [].
    end = B + DAY
    tail = [at(end - 44 * S + i * S, 200.0 + i, status=Status.SUSPECT, quality=Quality.SPIKE) for i in range(25)]
    tail += [at(end - 10 * S, 900.0, status=Status.REJECTED, quality=Quality.OUT_OF_RANGE),
             at(end - 5 * S, 901.0, status=Status.REJECTED, quality=Quality.OUT_OF_RANGE)]
    await store.write(Batch(readings=[at(B - H, 100.0), at(end - 45 * S, 199.0), *tail]))

    bill = await store.billing_read("M-1", EI, start=B, end=end)

    assert ts_of(bill.closing) == end - 45 * S and bill.consumption == 99.0
    assert bill.suspect is True
    assert bill.flag_counts == {"out_of_range": 2, "rejected": 2, "spike": 25, "suspect": 25}
    assert bill.flags == ["out_of_range", "rejected", "spike", "suspect"]


async def test_a_bill_counts_the_reads_before_its_opening_read_and_between(store: Store) -> None:
    end = B + DAY
    await store.write(Batch(readings=[
        at(B + S, 50.0, status=Status.SUSPECT, quality=Quality.REGRESSION),  # before the first billable read
        at(B + 2 * S, 100.0),
        at(B + 6 * H, 106.0, quality=Quality.GAP),  # reads were missing before it
        estimate(B + 7 * H, 107.0),
        at(B + 8 * H, 108.0),
    ]))  # fmt: skip

    bill = await store.billing_read("M-1", EI, start=B, end=end)

    assert ts_of(bill.opening) == B + 2 * S and bill.consumption == 8.0
    assert bill.flag_counts == {"estimated": 1, "gap": 1, "opening_after_start": 1, "regression": 1, "suspect": 1}
    assert bill.suspect and not bill.estimated  # both ends are real reads


async def test_the_closing_read_is_the_last_real_read_not_a_newer_estimate(store: Store) -> None:
    # The finding: a move took an estimate as its closing read with a real valid read 6 s earlier.
    move = B + DAY
    await store.create_meters([meter("M-1", consumer_number="C-1", installed_at=B - H)], at=B - H)
    await store.write(Batch(readings=[at(B - H, 100.0), at(move - 6 * S, 200.0), estimate(move - S, 200.4),
                                      at(move + H, 210.0)]))

    bill = await store.billing_read("M-1", EI, start=B - H, end=move)
    await store.assign_meter("M-1", "C-2", start=move, at=move + 2 * H)
    old, new = await store.assignments(meter_id="M-1")

    assert ts_of(bill.closing) == move - 6 * S and bill.consumption == 100.0 and not bill.estimated
    assert old.closing_read == new.opening_read == 200.0
    assert ts_of(old.closing) == ts_of(new.opening) == move - 6 * S


async def test_an_estimate_closes_a_period_only_without_a_real_read_in_the_window(store: Store) -> None:
    end = B + DAY
    await store.write(Batch(readings=[at(B - H, 100.0), at(end - 2 * H, 150.0), estimate(end - MIN, 155.0)]))

    bill = await store.billing_read("M-1", EI, start=B, end=end)

    assert bill.closing is not None and bill.closing.value == 155.0 and bill.estimated
    assert estimate_method(bill.closing) == "linear" and bill.flag_counts == {"estimated": 1}
    store.estimate_window = 3 * H  # type: ignore[attr-defined]  # [storage] billing_estimate_window
    wider = await store.billing_read("M-1", EI, start=B, end=end)
    assert wider.closing is not None and wider.closing.value == 150.0 and not wider.estimated


# -- item 5: one source of truth for move reads -------------------------------------------------
async def test_move_reads_follow_a_rejection_and_a_verification(store: Store) -> None:
    move = B + DAY
    await store.create_meters([meter("M-1", consumer_number="C-1", installed_at=B - H)], at=B - H)
    await store.write(Batch(readings=[at(B - H, 90.0), at(move - H, 100.0),
                                      at(move - 30 * MIN, 104.0, status=Status.SUSPECT, quality=Quality.SPIKE),
                                      at(move - 10 * MIN, 105.0), at(move + H, 110.0)]))
    await store.assign_meter("M-1", "C-2", start=move, at=move + 2 * H)

    await store.set_status("M-1", EI, move - 10 * MIN, Status.REJECTED, note="photo shows 100.2", by="test")
    old, new = await store.assignments(meter_id="M-1")
    bill = await store.billing_read("M-1", EI, start=old.start, end=move)

    # The finding: the assignment kept showing the rejected value while billing used the earlier read.
    assert old.closing_read == new.opening_read == bill.closing.value == 100.0  # type: ignore[union-attr]
    assert old.closing == new.opening == bill.closing
    assert old.closing is not None and (old.closing.ts, old.closing.status) == (move - H, Status.VALID)

    await store.set_status("M-1", EI, move - 30 * MIN, Status.VERIFIED, note="checked on site", by="test")
    old, new = await store.assignments(meter_id="M-1")
    assert old.closing is not None and (old.closing.value, old.closing.status) == (104.0, Status.VERIFIED)
    assert old.closing == new.opening


# -- item 6: the first period is billable -------------------------------------------------------
async def test_the_first_assignment_is_billed_from_the_first_read_after_its_start(store: Store) -> None:
    # The finding: the first read came 2 s after the assignment started, so the opening read and
    # the consumption were null although the meter advanced 4.33 kWh.
    await store.create_meters([meter("M-1", consumer_number="C-1", installed_at=B)], at=B + DAY)
    await store.write(Batch(readings=[at(B + 2 * S + i * 10 * MIN, 1000.0 + i * 0.433) for i in range(11)]))
    last = B + 2 * S + 100 * MIN

    [a] = await store.assignments(meter_id="M-1")
    bill = await store.billing_read("M-1", EI, start=a.start, end=B + 2 * H)
    hourly = await store.consumption("M-1", EI, start=B, end=B + 2 * H, bucket="hour")

    assert a.opening_after_start and ts_of(a.opening) == B + 2 * S and a.opening_read == 1000.0
    assert bill.opening_after_start and ts_of(bill.opening) == B + 2 * S and bill.flags == ["opening_after_start"]
    assert bill.consumption == pytest.approx(4.33)
    assert hourly[0].opening_after_start and ts_of(hourly[0].first_read) == B + 2 * S
    assert sum(b.value or 0 for b in hourly) == pytest.approx(4.33) and ts_of(hourly[-1].last_read) == last


async def test_at_a_move_the_old_closing_and_the_new_opening_stay_one_read(store: Store) -> None:
    await store.create_meters([meter("M-1", consumer_number="C-1", installed_at=B)], at=B)
    await store.write(Batch(readings=[at(B + 2 * S + i * 10 * MIN, 1000.0 + i * 0.5) for i in range(12)]))
    move = B + 55 * MIN  # between the reads at 50 and 60 min

    await store.assign_meter("M-1", "C-2", start=move, at=B + 3 * H)
    old, new = await store.assignments(meter_id="M-1")
    out = await store.billing_read("M-1", EI, start=old.start, end=move)
    in_ = await store.billing_read("M-1", EI, start=move, end=B + 3 * H)

    assert old.closing == new.opening == out.closing == in_.opening and ts_of(new.opening) == B + 2 * S + 50 * MIN
    assert not new.opening_after_start and not in_.opening_after_start and out.opening_after_start
    assert (out.consumption or 0) + (in_.consumption or 0) == pytest.approx(5.5)  # the meter's whole advance


# -- item 7: installation dates hold --------------------------------------------------------------
async def test_no_assignment_starts_before_the_installation(store: Store) -> None:
    await store.create_meters([meter("M-1", installed_at=B)], at=B + DAY)

    with pytest.raises(Conflict, match="before the meter's installed_at"):
        await store.assign_meter("M-1", "C-1", start=B - H, at=B + DAY)
    with pytest.raises(Conflict, match=r"installed_at .* is in the future"):
        await store.create_meters([meter("M-2", consumer_number="C-2", installed_at=B + 2 * DAY)], at=B + DAY)
    assert await store.assignments(meter_id="M-1") == [] and await store.get_meter("M-2") is None
    got = await store.assign_meter("M-1", "C-1", start=B, at=B + DAY)
    assert got.start == B


async def test_installed_at_cannot_move_past_readings_or_an_assignment(store: Store) -> None:
    await store.create_meters([meter("M-1", installed_at=B)], at=B + DAY)
    power = dataclasses.replace(reading("M-1", Channel.POWER, value=3.0), ts=B + 2 * H)
    await store.write(Batch(readings=[at(B + H, 1.0), at(B + 2 * H, 2.0), power]))

    with pytest.raises(Conflict, match=r"would orphan 3 reading\(s\) stored before it \(the first at 2025-06-01T01"):
        await store.update_meter("M-1", {"installed_at": B + 3 * H}, at=B + DAY)
    with pytest.raises(Conflict, match=r"would orphan 1 reading\(s\)"):
        await store.update_meter("M-1", {"installed_at": B + 90 * MIN}, at=B + DAY)
    got = await store.get_meter("M-1")
    assert got is not None and got.installed_at == B

    moved = await store.update_meter("M-1", {"installed_at": B + 30 * MIN}, at=B + DAY)  # before every reading
    assert moved.installed_at == B + 30 * MIN
    await store.assign_meter("M-1", "C-1", start=B + 40 * MIN, at=B + DAY)
    with pytest.raises(Conflict, match="after the start of its assignment to C-1"):
        await store.update_meter("M-1", {"installed_at": B + 50 * MIN}, at=B + DAY)
    assert (await store.update_meter("M-1", {"installed_at": B - DAY}, at=B + DAY)).installed_at == B - DAY


async def test_buckets_across_an_outage_use_estimates_only_where_no_real_read_is_near(store: Store) -> None:
    # Twelve hourly buckets (the many-bucket probe path): real reads every 15 min, an outage from
    # 3 h to 9 h filled by estimates, and at 10 h a real read 6 s before the bound and an
    # estimate 1 s before it.
    q = 15 * MIN
    reads = [at(B + k * q, 100.0 + k / 4) for k in range(13)]
    reads += [estimate(B + k * q, 100.0 + k / 4) for k in range(13, 36)]
    reads += [at(B + 9 * H, 109.0, quality=Quality.GAP)]
    reads += [at(B + k * q, 100.0 + k / 4) for k in range(37, 49) if k != 40]
    reads += [at(B + 10 * H - 6 * S, 110.0 - 6 / 3600), estimate(B + 10 * H - S, 110.0 - 1 / 3600)]
    await store.write(Batch(readings=reads))

    hourly = await store.consumption("M-1", EI, start=B, end=B + 12 * H, bucket="hour")
    bill = await store.billing_read("M-1", EI, start=B, end=B + 12 * H)

    assert [b.estimated for b in hourly] == [False] * 3 + [True] * 6 + [False] * 3
    assert ts_of(hourly[9].last_read) == ts_of(hourly[10].first_read) == B + 10 * H - 6 * S
    assert [round(b.value or 0, 6) for b in hourly] == [1.0] * 9 + [round(1 - 6 / 3600, 6), round(1 + 6 / 3600, 6), 1.0]
    assert bill.consumption == pytest.approx(sum(b.value or 0 for b in hourly)) == pytest.approx(12.0)
    assert not bill.estimated and bill.flag_counts == {"estimated": 24, "gap": 1}


async def test_the_configured_estimate_window_reaches_the_store(tmp_path: Path) -> None:
    cfg, _ = parse_config(f'[gateway]\ndata_dir = "{tmp_path}"\n[storage]\nbilling_estimate_window = "2 hours"\n',
                          "t.toml", env={})
    async with await open_configured_store(cfg) as store:
        assert store.estimate_window == 2 * H  # type: ignore[attr-defined]
    default, _ = parse_config(f'[gateway]\ndata_dir = "{tmp_path}"\n', "t.toml", env={})
    async with await open_configured_store(default) as store:
        assert store.estimate_window == 15 * MIN  # type: ignore[attr-defined]


# -- issue 16, item 1: values as the meter shows them ------------------------------------------
async def test_bills_and_buckets_add_up_in_the_decimals_the_meter_shows(store: Store) -> None:
    # 12345.7 - 12345.6 in float arithmetic is 0.10000000000036380: no bill may say so.
    await store.write(Batch(readings=[at(B + H, 12345.6), at(B + 25 * H, 12345.7), at(B + 49 * H, 12346.1)]))
    bill = await store.billing_read("M-1", EI, start=B, end=B + 3 * DAY)
    days = await store.consumption("M-1", EI, start=B + H, end=B + 49 * H, bucket="day")
    assert bill.consumption == 0.5 and repr(bill.consumption) == "0.5"
    assert [repr(b.value) for b in days] == ["0.0", "0.1", "0.4"]
