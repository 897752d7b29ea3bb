"""Issue 24 item 7 on every store: each edit, verdict and replaced estimate is an entry of the reading's
audit trail with who, when, the rule or method and the value and status before; the reading as first
recorded is never lost; the feed shows each change once; a bad edit stores nothing."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from gateway.errors import InvalidField, NotFound
from gateway.model import Batch, Channel, Quality, Source, Status
from storage.base import Store
from tests.storage.backends import open_backend
from tests.storage.samples import T0, reading

E = Channel.ENERGY_IMPORT
TS = T0 + timedelta(minutes=15)


async def _feed(store: Store, after: int) -> tuple[list[tuple[float, Status]], int]:
    page = await store.feed(after=after, limit=1000)
    return [(r.value, r.status) for r in page.items if r.ts == TS], page.next_after


async def test_an_edit_keeps_the_value_it_replaced_and_is_shown_once(store: Store) -> None:
    await store.write(Batch(readings=[reading(minutes=0, value=10.0),
                                      reading(minutes=15, value=99.5, quality=Quality.SPIKE, status=Status.SUSPECT),
                                      reading(minutes=30, value=11.0)]))
    _, cursor = await _feed(store, 0)

    edited = await store.edit_reading("M-1", E, TS, 10.5, note="photo of the register", by="clerk", key_id="k1")
    again = await store.edit_reading("M-1", E, TS, 10.5, note="again", by="other", key_id="k2")
    assert (edited.value, edited.status, edited.quality, edited.source) == (10.5, Status.VERIFIED, Quality.SPIKE,
                                                                           Source.MODBUS)
    assert again == edited  # the value and status it has: no new seq, no entry
    news, cursor = await _feed(store, cursor)
    assert news == [(10.5, Status.VERIFIED)]  # once

    second = await store.edit_reading("M-1", E, TS, 10.6, note="misread a digit", by="supervisor", key_id="k3")
    assert second.seq is not None and edited.seq is not None and second.seq > edited.seq
    history = await store.reading_history("M-1", E, TS)
    assert [(h.action, h.previous, h.status, h.previous_value, h.value, h.rule, h.note, h.by, h.key_id)
            for h in history] == [
        ("edit", Status.SUSPECT, Status.VERIFIED, 99.5, 10.5, "spike", "photo of the register", "clerk", "k1"),
        ("edit", Status.VERIFIED, Status.VERIFIED, 10.5, 10.6, "spike", "misread a digit", "supervisor", "k3")]
    assert history[0].at <= history[1].at

    origin = await store.reading_origin("M-1", E, TS)
    assert (origin.value, origin.status, origin.reading.value) == (99.5, Status.SUSPECT, 10.6)


async def test_verdicts_and_edits_share_one_trail(store: Store) -> None:
    await store.write(Batch(readings=[reading(minutes=15, value=5.0, status=Status.SUSPECT)]))
    await store.set_status("M-1", E, TS, Status.REJECTED, note="meter swapped", by="clerk", key_id="k1")
    await store.edit_reading("M-1", E, TS, 5.25, note="read on site", by="fitter", key_id="k2")
    history = await store.reading_history("M-1", E, TS)
    assert [(h.action, h.previous, h.status, h.previous_value, h.value) for h in history] == [
        ("verdict", Status.SUSPECT, Status.REJECTED, None, None),
        ("edit", Status.REJECTED, Status.VERIFIED, 5.0, 5.25)]
    origin = await store.reading_origin("M-1", E, TS)
    assert (origin.value, origin.status) == (5.0, Status.SUSPECT)


async def test_a_replaced_estimate_stays_in_the_trail_with_its_method(store: Store) -> None:
    note = "estimate=like_day from=2024-03-01T12:00:00.123456Z,2024-03-01T12:30:00.123456Z like=fri scale=1.02"
    estimate = reading(minutes=15, value=10.4, quality=Quality.ESTIMATED, status=Status.ESTIMATED,
                       source=Source.ESTIMATE, note=note)
    await store.write(Batch(readings=[reading(minutes=0, value=10.0), estimate, reading(minutes=30, value=11.0)]))
    assert await store.reading_history("M-1", E, TS) == []
    origin = await store.reading_origin("M-1", E, TS)
    assert (origin.value, origin.status, origin.reading.note) == (10.4, Status.ESTIMATED, note)
    _, cursor = await _feed(store, 0)

    result = await store.write(Batch(readings=[reading(minutes=15, value=10.45)]))  # the real read, late
    assert result.readings_replaced == 1
    [entry] = await store.reading_history("M-1", E, TS)
    assert (entry.action, entry.previous, entry.status, entry.previous_value, entry.value, entry.rule, entry.by,
            entry.key_id, entry.recorded_at) == ("estimate_replaced", Status.ESTIMATED, Status.VALID, 10.4, 10.45,
                                                 note, "modbus", None, estimate.received_at)
    origin = await store.reading_origin("M-1", E, TS)
    assert (origin.value, origin.status, origin.reading.value) == (10.4, Status.ESTIMATED, 10.45)
    assert (await _feed(store, cursor))[0] == [(10.45, Status.VALID)]

    await store.write(Batch(readings=[reading(minutes=15, value=10.45)]))  # the same read again: no entry
    assert len(await store.reading_history("M-1", E, TS)) == 1


@pytest.mark.parametrize("value", [math.nan, math.inf])
async def test_a_bad_edit_stores_nothing(store: Store, value: float) -> None:
    await store.write(Batch(readings=[reading(minutes=15, value=5.0, status=Status.SUSPECT)]))
    with pytest.raises(NotFound, match="M-1/energy_import"):
        await store.edit_reading("M-1", E, TS + timedelta(minutes=1), 5.5, note="n", by="clerk")
    with pytest.raises(NotFound, match="M-9"):
        await store.edit_reading("M-9", E, TS, 5.5, note="n", by="clerk")
    with pytest.raises(InvalidField, match="value"):
        await store.edit_reading("M-1", E, TS, value, note="n", by="clerk")
    assert await store.reading_history("M-1", E, TS) == []
    [stored] = await store.readings("M-1", start=TS, end=TS + timedelta(seconds=1))
    assert (stored.value, stored.status) == (5.0, Status.SUSPECT)
    assert await store.readings("M-1", start=TS + timedelta(minutes=1), end=TS + timedelta(minutes=2)) == []


#: The last schema version before the audit trail, per backend.
BEFORE = {"sqlite": 8, "timescale": 7, "postgresql": 7}


async def test_an_upgraded_store_keeps_its_verdicts_as_the_trails_first_entries(
        store_target: tuple[str, str]) -> None:  # fmt: skip
    backend, where = store_target
    store = await open_backend(backend, where)
    try:
        await store.migrate(upto=BEFORE[backend])
        await store.write(Batch(readings=[reading(minutes=15, value=5.0, status=Status.SUSPECT)]))
        await store.set_status("M-1", E, TS, Status.VERIFIED, note="checked", by="clerk", key_id="k1")

        await store.migrate()

        await store.edit_reading("M-1", E, TS, 5.5, note="misread", by="clerk", key_id="k1")
        history = await store.reading_history("M-1", E, TS)
        assert [(h.action, h.previous, h.status, h.previous_value, h.value, h.note) for h in history] == [
            ("verdict", Status.SUSPECT, Status.VERIFIED, None, None, "checked"),
            ("edit", Status.VERIFIED, Status.VERIFIED, 5.0, 5.5, "misread")]
        origin = await store.reading_origin("M-1", E, TS)
        assert (origin.value, origin.status) == (5.0, Status.SUSPECT)
    finally:
        await store.close()


async def test_an_edited_estimate_replaced_by_the_real_read_keeps_its_origin(store: Store) -> None:
    note = "estimate=linear from=2024-03-01T12:00:00.123456Z,2024-03-01T12:30:00.123456Z linear_hours=3"
    estimate = reading(minutes=15, value=10.4, quality=Quality.ESTIMATED, status=Status.ESTIMATED,
                       source=Source.ESTIMATE, note=note)
    await store.write(Batch(readings=[estimate]))
    await store.edit_reading("M-1", E, TS, 10.6, note="customer's photo", by="clerk", key_id="k1")
    await store.write(Batch(readings=[reading(minutes=15, value=10.55)]))

    history = await store.reading_history("M-1", E, TS)
    assert [(h.action, h.previous, h.status, h.previous_value, h.value, h.rule) for h in history] == [
        ("edit", Status.ESTIMATED, Status.VERIFIED, 10.4, 10.6, note),
        ("estimate_replaced", Status.VERIFIED, Status.VALID, 10.6, 10.55, note)]
    origin = await store.reading_origin("M-1", E, TS)
    assert (origin.value, origin.status, origin.reading.value, origin.reading.source) == (
        10.4, Status.ESTIMATED, 10.55, Source.MODBUS)
    assert origin.first_change is not None
    assert (origin.first_change.rule, origin.first_change.recorded_at) == (note, estimate.received_at)
