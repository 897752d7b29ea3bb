"""Wave-3 store methods (the account-system API), run against every backend: API keys,
meter registry edits, configuration sync, assignments, consumers, events pages, PAYG
totals, meter activity."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from gateway.errors import InvalidRequest, NotFound
from gateway.model import Batch, Channel, EventKind, MeterStatus, Relay, Status, Utility
from storage.base import Store
from storage.keys import Scope, new_key
from storage.records import Conflict
from tests.storage.samples import T0, balance, event, meter, reading

H = timedelta(hours=1)
NOW = T0 + 30 * 24 * H


# -- API keys ---------------------------------------------------------------------
async def test_api_keys_are_stored_hashed_listed_and_revoked(store: Store) -> None:
    secret, key = new_key("billing", frozenset({Scope.READ, Scope.WRITE}), T0)
    _, other = new_key("grafana", frozenset({Scope.DIAG}), T0 + H)
    await store.create_api_key(key)
    await store.create_api_key(other)

    got = await store.get_api_key(key.key_id)
    assert got == key and secret not in repr(got) and got.hash != secret
    assert [k.key_id for k in await store.list_api_keys()] == [key.key_id, other.key_id]
    with pytest.raises(Conflict, match="already taken"):
        await store.create_api_key(key)

    revoked = await store.revoke_api_key(key.key_id, at=T0 + 2 * H)
    again = await store.revoke_api_key(key.key_id, at=T0 + 3 * H)
    assert revoked.revoked_at == again.revoked_at == T0 + 2 * H  # the first revocation stays
    assert not revoked.allows(Scope.READ)
    with pytest.raises(NotFound):
        await store.revoke_api_key("nosuchid", at=T0)
    assert await store.get_api_key("nosuchid") is None


# -- meters -----------------------------------------------------------------------
async def test_create_meters_is_all_or_nothing_and_opens_assignments(store: Store) -> None:
    await store.create_meters([meter("M-1", consumer_number="C-1"), meter("M-2")], at=NOW)

    with pytest.raises(Conflict, match="M-2"):
        await store.create_meters([meter("M-3"), meter("M-2")], at=NOW)
    with pytest.raises(Conflict, match="M-4"):
        await store.create_meters([meter("M-4"), meter("M-4")], at=NOW)
    assert [m.meter_id for m in await store.list_meters()] == ["M-1", "M-2"]
    [a] = await store.assignments(meter_id="M-1")
    assert (a.consumer_number, a.start, a.end) == ("C-1", datetime(2023, 5, 17, 8, 0, tzinfo=UTC), None)
    consumer = await store.get_consumer("C-1")
    assert consumer is not None and consumer.active


async def test_list_meters_filters(store: Store) -> None:
    await store.upsert_meters([
        meter("M-1", consumer_number="C-1"),
        meter("M-2", status=MeterStatus.MAINTENANCE),
        meter("P-1", payg=True),
        meter("W-1", utility=Utility.WATER, consumer_number="C-1"),
    ])

    async def ids(**kw: object) -> list[str]:
        return [m.meter_id for m in await store.list_meters(**kw)]  # type: ignore[arg-type]

    assert await ids(status=MeterStatus.MAINTENANCE) == ["M-2"]
    assert await ids(utility=Utility.WATER) == ["W-1"]
    assert await ids(payg=True) == ["P-1"]
    assert await ids(payg=False) == ["M-1", "M-2", "W-1"]
    assert await ids(consumer_number="C-1") == ["M-1", "W-1"]
    assert await ids(consumer_number="C-1", utility=Utility.ELECTRICITY, search="m-") == ["M-1"]


async def test_update_meter_changes_only_the_given_fields(store: Store) -> None:
    await store.create_meters([meter("M-1")], at=NOW)

    got = await store.update_meter("M-1", {"location": None, "tags": {"feeder": "F9"},
                                           "status": MeterStatus.MAINTENANCE}, at=NOW)

    assert got == dataclasses.replace(meter("M-1"), location=None, tags={"feeder": "F9"},
                                      status=MeterStatus.MAINTENANCE)
    assert await store.get_meter("M-1") == got
    assert await store.update_meter("M-1", {}, at=NOW) == got
    with pytest.raises(InvalidRequest, match="cannot change consumer_number, utility"):
        await store.update_meter("M-1", {"utility": Utility.GAS, "consumer_number": "C-9"}, at=NOW)
    with pytest.raises(NotFound):
        await store.update_meter("M-9", {"location": "x"}, at=NOW)


async def test_sync_meters_keeps_what_the_api_changed(store: Store) -> None:
    configured = meter("M-1", consumer_number="C-1", location=None, tags={}, device_number=None)
    await store.sync_meters([(configured, frozenset({"meter_id", "consumer_number"}))], at=NOW)
    await store.update_meter("M-1", {"location": "Flat 9", "tags": {"k": "v"}}, at=NOW)
    await store.assign_meter("M-1", "C-2", start=NOW, at=NOW)

    moved = dataclasses.replace(configured, address="10.0.0.8:502/4", status=MeterStatus.ACTIVE)
    await store.sync_meters([(moved, frozenset({"meter_id", "consumer_number", "endpoint", "unit"}))], at=NOW + H)

    got = await store.get_meter("M-1")
    assert got is not None
    assert (got.address, got.location, got.tags, got.consumer_number) == ("10.0.0.8:502/4", "Flat 9", {"k": "v"}, "C-2")
    assert [a.consumer_number for a in await store.assignments(meter_id="M-1")] == ["C-1", "C-2"]
    # a field the file sets wins at each start
    await store.sync_meters([(dataclasses.replace(moved, location="From config"),
                              frozenset({"meter_id", "location"}))], at=NOW + H)
    got = await store.get_meter("M-1")
    assert got is not None and got.location == "From config" and got.tags == {"k": "v"}


# -- assignments and consumers ----------------------------------------------------------
async def _register_with_reads(store: Store) -> None:
    await store.create_meters([meter("M-1", consumer_number="C-1", installed_at=T0 - H)], at=T0)
    await store.write(Batch(readings=[
        reading(minutes=0, value=100.0),
        reading(minutes=60, value=110.0),
        reading(minutes=120, value=999.0, status=Status.SUSPECT),  # never a closing read
        reading(minutes=120, value=5.0, channel=Channel.POWER),
        reading(minutes=180, value=130.0),
    ]))


async def test_assignment_closes_the_previous_one_with_the_last_valid_cumulative_read(store: Store) -> None:
    await _register_with_reads(store)

    new = await store.assign_meter("M-1", "C-2", start=T0 + 150 * timedelta(minutes=1), at=NOW)

    assert (new.consumer_number, new.opening_read, new.end, new.closing_read) == ("C-2", 110.0, None, None)
    first, second = await store.assignments(meter_id="M-1")
    assert (first.consumer_number, first.end, first.closing_read) == ("C-1", new.start, 110.0)
    assert second == new
    got = await store.get_meter("M-1")
    assert got is not None and got.consumer_number == "C-2"
    assert await store.assignments(consumer_number="C-2") == [new]


async def test_assignment_uses_the_utilities_register(store: Store) -> None:
    await store.create_meters([meter("W-1", utility=Utility.WATER)], at=T0)
    await store.write(Batch(readings=[reading("W-1", Channel.VOLUME, minutes=0, value=12.5),
                                      reading("W-1", Channel.ENERGY_IMPORT, minutes=1, value=1.0)]))

    got = await store.assign_meter("W-1", "C-7", start=T0 + H, at=NOW)

    assert got.opening_read == 12.5


async def test_assignments_refuse_what_would_rewrite_history(store: Store) -> None:
    await _register_with_reads(store)
    with pytest.raises(Conflict, match="already assigned to consumer C-1"):
        await store.assign_meter("M-1", "C-1", start=T0 + H, at=NOW)
    with pytest.raises(Conflict, match="must be after the start of its current assignment"):
        await store.assign_meter("M-1", "C-2", start=T0 - 2 * H, at=NOW)
    with pytest.raises(InvalidRequest, match="in the future"):
        await store.assign_meter("M-1", "C-2", start=NOW + H, at=NOW)
    with pytest.raises(NotFound):
        await store.assign_meter("M-9", "C-2", start=T0, at=NOW)
    await store.assign_meter("M-1", "C-2", start=T0 + 2 * H, at=NOW)
    await store.deactivate_meter("M-1", at=T0 + 4 * H)
    with pytest.raises(Conflict, match="before the end of its last assignment"):
        await store.assign_meter("M-1", "C-3", start=T0 + 3 * H, at=NOW)


async def test_deactivating_a_consumer_closes_its_assignments_and_refuses_new_ones(store: Store) -> None:
    await _register_with_reads(store)

    got = await store.deactivate_consumer("C-1", at=T0 + 4 * H)
    again = await store.deactivate_consumer("C-1", at=T0 + 5 * H)

    assert (got.active, got.deactivated_at) == (False, T0 + 4 * H) and again == got
    assert await store.get_consumer("C-1") == got
    [a] = await store.assignments(consumer_number="C-1")
    assert (a.end, a.closing_read) == (T0 + 4 * H, 130.0)
    m = await store.get_meter("M-1")
    assert m is not None and m.consumer_number is None and m.status is MeterStatus.ACTIVE
    with pytest.raises(Conflict, match="deactivated"):
        await store.assign_meter("M-1", "C-1", start=T0 + 5 * H, at=NOW)
    with pytest.raises(NotFound):
        await store.deactivate_consumer("C-404", at=NOW)
    assert await store.get_consumer("C-404") is None


async def test_deactivating_a_meter_keeps_its_history(store: Store) -> None:
    await _register_with_reads(store)

    got = await store.deactivate_meter("M-1", at=T0 + 4 * H)

    assert (got.status, got.consumer_number) == (MeterStatus.INACTIVE, None)
    [a] = await store.assignments(meter_id="M-1")
    assert (a.end, a.closing_read) == (T0 + 4 * H, 130.0)
    assert len(await store.readings("M-1", start=T0, end=NOW)) == 5
    with pytest.raises(NotFound):
        await store.deactivate_meter("M-9", at=NOW)


# -- readings, events, PAYG, activity ----------------------------------------------------
async def test_readings_filter_by_status(store: Store) -> None:
    await _register_with_reads(store)
    got = await store.readings("M-1", start=T0, end=NOW, status=Status.SUSPECT)
    assert [(r.value, r.status) for r in got] == [(999.0, Status.SUSPECT)]


async def test_events_page_filters_by_time_and_pages_by_ts_and_seq(store: Store) -> None:
    events = [event(m, kind=EventKind.ANOMALY if m % 2 else EventKind.COMM_LOST) for m in range(6)]
    same_ts = dataclasses.replace(events[5], detail="another at the same time")
    await store.write(Batch(events=[*events, same_ts]))

    first = await store.events_page(limit=3)
    rest = await store.events_page(limit=10, before=(first[-1].event.ts, first[-1].seq))
    assert [e.event for e in first + rest][:2] in ([same_ts, events[5]], [events[5], same_ts])
    assert len(first + rest) == 7 and len({e.seq for e in first + rest}) == 7
    window = await store.events_page(start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=4),
                                     kind=EventKind.ANOMALY)
    assert [e.event for e in window] == [events[3], events[1]]
    assert await store.events_page(meter_id="M-2") == []


async def test_payg_totals_add_up_the_latest_balance_of_each_payg_meter(store: Store) -> None:
    await store.upsert_meters([meter("P-1", payg=True), meter("P-2", payg=True), meter("P-3", payg=True),
                               meter("M-1")])
    second = dataclasses.replace(balance("P-2", amount="0.50"), relay=Relay.CONNECTED, low_credit=False,
                                 emergency_credit_in_use=False, debt=None)
    usd = dataclasses.replace(balance("P-3", amount="7"), currency="USD")
    await store.write(Batch(balances=[balance("P-1", amount="10.25"), balance("P-1", minutes=5, amount="9.75"),
                                      second, usd, balance("M-1", amount="1000")]))

    kes, dollars = await store.payg_totals()

    assert (kes.currency, kes.meters, kes.total_balance) == ("KES", 2, Decimal("10.25"))
    assert (kes.low_credit, kes.emergency_credit, kes.disconnected, kes.total_debt) == (1, 1, 1, Decimal("-0.005"))
    assert (dollars.currency, dollars.meters, dollars.total_balance) == ("USD", 1, Decimal("7"))


async def test_meter_activity_gives_the_newest_reading_or_balance_since(store: Store) -> None:
    await store.upsert_meters([meter("M-1"), meter("M-2", status=MeterStatus.INACTIVE), meter("P-1", payg=True)])
    await store.write(Batch(readings=[reading("M-1", minutes=0), reading("M-1", Channel.POWER, minutes=30)],
                            balances=[balance("P-1", minutes=10)]))

    got = {a.meter_id: a for a in await store.meter_activity(since=T0 - H)}
    later = {a.meter_id: a.last_seen for a in await store.meter_activity(since=T0 + 20 * timedelta(minutes=1))}

    assert (got["M-1"].last_seen, got["P-1"].last_seen, got["M-2"].last_seen) == (
        T0 + timedelta(minutes=30), T0 + timedelta(minutes=10), None)
    assert got["M-2"].status is MeterStatus.INACTIVE and got["P-1"].payg
    assert later == {"M-1": T0 + timedelta(minutes=30), "M-2": None, "P-1": None}


async def test_latest_readings_cover_every_channel_a_meter_sent(store: Store, second_store: Store) -> None:
    await store.write(Batch(readings=[reading(minutes=0), reading(channel=Channel.POWER, minutes=1)]))
    await second_store.write(Batch(readings=[reading(channel=Channel.FREQUENCY, minutes=2)]))
    await store.write(Batch(readings=[reading(minutes=5, value=2.0)]))

    got = await store.latest_readings("M-1")

    assert [(r.channel, r.value) for r in got] == [(Channel.ENERGY_IMPORT, 2.0), (Channel.FREQUENCY, 1.0),
                                                   (Channel.POWER, 1.0)]


async def test_many_buckets_are_closed_by_the_last_usable_read_at_or_before_each_bound(store: Store) -> None:
    # Reads on boundaries, between them, a six-hour gap, and rejected reads (never used).
    start = datetime(2024, 3, 1, tzinfo=UTC)
    minutes = [0, 30, 60, 61, 119, 120, 180, 250, 600, 601, 659, 660, 1000, 1439, 1440, 2000, 2879]
    reads = [dataclasses.replace(reading(value=100.0 + i, status=Status.REJECTED if i % 5 == 4 else Status.VALID),
                                 ts=start + timedelta(minutes=m)) for i, m in enumerate(minutes)]
    await store.write(Batch(readings=reads))

    got = await store.consumption("M-1", Channel.ENERGY_IMPORT, start=start, end=start + 48 * H, bucket="hour")

    usable = [r for r in reads if r.status is not Status.REJECTED]

    def closing(bound: datetime) -> float | None:
        before = [r.value for r in usable if r.ts <= bound]
        return before[-1] if before else None

    assert len(got) == 48
    for b in got:
        assert (b.first_read.value if b.first_read else None) == closing(b.start), b.start
        assert (b.last_read.value if b.last_read else None) == closing(b.end), b.end


async def test_two_gateways_syncing_the_same_new_meters_at_once(store: Store, second_store: Store) -> None:
    # Gateways started together, a meter in both configs (SPEC §8): neither may fail on the
    # other's insert of it.
    configured = [(meter(f"M-{i:03d}", consumer_number=f"C-{i:03d}"), frozenset({"meter_id", "consumer_number"}))
                  for i in range(60)]  # fmt: skip
    await asyncio.gather(store.sync_meters(configured, at=NOW), second_store.sync_meters(configured, at=NOW))
    assert [m.meter_id for m in await store.list_meters(limit=1000)] == [m.meter_id for m, _ in configured]
    for m, _ in configured:
        assert [a.consumer_number for a in await store.assignments(meter_id=m.meter_id)] == [m.consumer_number]
