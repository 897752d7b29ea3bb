"""Balance updates on the write path, on every backend: the binary COPY fast path of the
PostgreSQL store must store exactly what the model says, and its fallback (a key already
stored, or twice in the batch) must keep `balances_inserted` exact and store no key twice.

On PostgreSQL a new key can only be written by the COPY (anything but a unique violation
fails the write), and a batch holding a stored key can only be written by the fallback
(the COPY fails whole), so the tests below pin each path without reaching into them.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from gateway.model import BalanceUpdate, Batch, Relay
from storage.base import Store
from tests.storage.samples import T0, balance, reading

PLUS_THREE = timezone(timedelta(hours=3))
START, END = T0 - timedelta(days=30), T0 + timedelta(days=30)


def _full(meter_id: str, minutes: int, amount: str) -> BalanceUpdate:
    """Every field set, in a non-UTC zone, with decimals whose scale must survive."""
    ts = (T0 + timedelta(minutes=minutes)).astimezone(PLUS_THREE)
    return BalanceUpdate(
        meter_id=meter_id,
        ts=ts,
        balance=Decimal(amount),
        currency="UGX",
        emergency_credit=Decimal("0.0100"),
        emergency_credit_in_use=True,
        debt=Decimal("123456789012345678.000000001"),
        relay=Relay.CONNECTED,
        last_topup_amount=Decimal("2500.50"),
        last_topup_ts=datetime(2024, 2, 27, 23, 59, 59, 999999, tzinfo=PLUS_THREE),
        low_credit=False,
        credit_exhausted=True,
        received_at=ts + timedelta(seconds=3, microseconds=1),
    )


def _bare(meter_id: str, minutes: int) -> BalanceUpdate:
    """Only the required fields: the optional columns must come back as None / False."""
    return BalanceUpdate(meter_id, T0 + timedelta(minutes=minutes), Decimal("-7.5"), "KES")


def _plain(b: BalanceUpdate) -> BalanceUpdate:
    return dataclasses.replace(b, seq=None)


async def _stored(store: Store, meter_id: str) -> list[BalanceUpdate]:
    return await store.balances(meter_id, start=START, end=END, limit=10_000)


async def test_new_balance_updates_round_trip_every_field(store: Store) -> None:
    written = [_full("P-RT", 0, "1234.5600"), _full("P-RT", 15, "-0.01"), _bare("P-RT", 30),
               balance("P-RT", minutes=45, amount="0")]  # fmt: skip
    result = await store.write(Batch(balances=written))
    assert result.balances_inserted == 4

    got = await _stored(store, "P-RT")
    assert [_plain(b) for b in got] == written  # same instants, exact decimals, enums, flags
    # Equal is not enough for money and time: the scale and the zone must come back too.
    assert [str(b.balance) for b in got] == ["1234.5600", "-0.01", "-7.5", "0"]
    assert [str(b.emergency_credit) for b in got[:2]] == ["0.0100", "0.0100"]
    assert str(got[0].debt) == "123456789012345678.000000001"
    assert str(got[0].last_topup_amount) == "2500.50" and got[0].currency == "UGX"
    assert got[0].relay is Relay.CONNECTED and got[3].relay is Relay.DISCONNECTED
    assert (got[2].emergency_credit, got[2].relay, got[2].last_topup_ts, got[2].received_at) == (None, None, None, None)
    assert all(b.ts.utcoffset() == timedelta(0) for b in got)
    assert got[0].last_topup_ts == datetime(2024, 2, 27, 20, 59, 59, 999999, tzinfo=UTC)
    assert got[1].received_at == written[1].received_at
    seqs = [b.seq for b in got]
    assert all(s is not None for s in seqs) and len(set(seqs)) == 4
    latest = await store.latest_balance("P-RT")
    assert latest is not None and _plain(latest) == written[3]


async def test_writing_the_same_batch_again_inserts_nothing_and_changes_nothing(store: Store) -> None:
    batch = Batch(balances=[_full("P-AGAIN", m, f"{100 - m}.00") for m in range(0, 60, 10)])
    assert (await store.write(batch)).balances_inserted == 6
    before = await _stored(store, "P-AGAIN")

    again = await store.write(batch)
    assert again.balances_inserted == 0
    assert await _stored(store, "P-AGAIN") == before  # seq included: no row was rewritten


async def test_one_stored_key_falls_back_and_inserts_exactly_the_others(store: Store) -> None:
    first = _full("P-MIX", 10, "50.00")
    assert (await store.write(Batch(balances=[first]))).balances_inserted == 1
    # The stored key comes last and carries another balance: the COPY has written the new
    # rows before it fails, and those must be rolled back with it and written again once.
    new = [_full("P-MIX", 0, "60.00"), _full("P-MIX", 20, "40.00"), _bare("P-OTHER", 10)]
    replay = dataclasses.replace(first, balance=Decimal("999.99"))
    readings = [reading("M-MIX", minutes=m) for m in range(3)]

    result = await store.write(Batch(readings=readings, balances=[*new, replay]))

    assert result.balances_inserted == 3
    # The balances' fallback runs in the batch's transaction: the readings written before it stay.
    assert result.readings_inserted == 3
    assert len(await store.readings("M-MIX", start=START, end=END)) == 3
    got = await _stored(store, "P-MIX")
    assert [_plain(b) for b in got] == [new[0], first, new[1]]  # the stored update won, once
    assert [_plain(b) for b in await _stored(store, "P-OTHER")] == [new[2]]


async def test_a_key_twice_in_one_batch_is_inserted_once_first_wins(store: Store) -> None:
    once = _full("P-TWICE", 5, "10.00")
    twice = dataclasses.replace(once, balance=Decimal("11.00"))
    other = _full("P-TWICE", 6, "9.00")

    result = await store.write(Batch(balances=[once, other, twice]))

    assert result.balances_inserted == 2
    assert [_plain(b) for b in await _stored(store, "P-TWICE")] == [once, other]
