"""Issue 27 on every store: a repeated verdict changes nothing and the reading's history keeps who and
why (item 9); the fleet is counted and its silent meters paged by the database (item 11)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.errors import NotFound
from gateway.model import Batch, Channel, MeterStatus, Status
from storage.base import Store
from storage.records import FleetCounts, SilentRule
from tests.storage.samples import T0, balance, meter, reading

H = timedelta(hours=1)


async def test_a_repeated_verdict_changes_nothing_and_the_history_keeps_each(store: Store) -> None:
    await store.write(Batch(readings=[reading(minutes=m, value=m, status=Status.SUSPECT) for m in range(3)]))
    ts = T0 + timedelta(minutes=1)

    verified = await store.set_status("M-1", Channel.ENERGY_IMPORT, ts, Status.VERIFIED, note="checked on site",
                                      by="clerk", key_id="k1")
    again = await store.set_status("M-1", Channel.ENERGY_IMPORT, ts, Status.VERIFIED, note="checked twice",
                                   by="other", key_id="k2")
    rejected = await store.set_status("M-1", Channel.ENERGY_IMPORT, ts, Status.REJECTED, note="meter swapped",
                                      by="supervisor", key_id="k3")

    assert again == verified  # the same seq: no feed reader gets it again
    assert rejected.seq is not None and verified.seq is not None and rejected.seq > verified.seq
    history = await store.reading_history("M-1", Channel.ENERGY_IMPORT, ts)
    assert [(h.previous, h.status, h.note, h.by, h.key_id) for h in history] == [
        (Status.SUSPECT, Status.VERIFIED, "checked on site", "clerk", "k1"),
        (Status.VERIFIED, Status.REJECTED, "meter swapped", "supervisor", "k3")]
    assert history[0].at <= history[1].at
    assert await store.reading_history("M-1", Channel.ENERGY_IMPORT, ts, after=history[0].id) == history[1:]
    assert await store.reading_history("M-1", Channel.ENERGY_IMPORT, ts, limit=1) == history[:1]
    assert await store.reading_history("M-1", Channel.ENERGY_IMPORT, T0) == []  # a reading without verdicts
    with pytest.raises(NotFound, match="M-1/energy_import"):
        await store.reading_history("M-1", Channel.ENERGY_IMPORT, T0 - H)


async def test_the_fleet_is_counted_and_its_silent_meters_paged_by_the_database(store: Store) -> None:
    await store.create_meters([meter(f"M-{i}") for i in range(1, 7)] + [meter("P-1", payg=True)], at=T0)
    await store.update_meter("M-6", {"status": MeterStatus.MAINTENANCE}, at=T0)
    await store.write(Batch(readings=[reading("M-1", minutes=50), reading("M-2", minutes=5),
                                      reading("M-3", minutes=-60 * 24 * 8)],  # older than the look-back
                            balances=[balance("P-1", minutes=55)]))
    now = T0 + H
    # M-2 is polled here every 5 minutes: silent after 15 without a reading; the rest after an hour.
    rule = SilentRule(now=now, since=now - timedelta(days=7), default_after=H,
                      after={"M-2": timedelta(minutes=15)})

    counts = await store.fleet_counts(rule)
    silent = [await store.silent_meters(rule, limit=2), await store.silent_meters(rule, limit=2, after="M-3")]

    assert counts == FleetCounts(7, {MeterStatus.ACTIVE: 6, MeterStatus.MAINTENANCE: 1, MeterStatus.INACTIVE: 0}, 4)
    assert [[(a.meter_id, a.last_seen) for a in page] for page in silent] == [
        [("M-2", T0 + timedelta(minutes=5)), ("M-3", None)], [("M-4", None), ("M-5", None)]]
    quiet_later = SilentRule(now=now + H, since=now - timedelta(days=7), default_after=H)
    assert (await store.fleet_counts(quiet_later)).silent == 6  # M-6 is in maintenance
