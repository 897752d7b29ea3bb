"""Special reads' records in every store: saved, moved through their states, found by correlation id,
by meter while under way, and by the window their readings lie in (what exports give a reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.model import Channel
from gateway.model.reads import ReadReason, ReadState, SpecialRead
from storage.base import Store

T = datetime(2026, 3, 1, 12, 0, 0, 412_000, tzinfo=UTC)


async def test_a_special_read_is_kept_through_its_states(store: Store) -> None:
    read = SpecialRead("r-1", "M-1", ReadReason.MOVE_OUT, T, channels=(Channel.ENERGY_IMPORT,), key_id="k1")
    await store.save_special_read(read)
    assert await store.get_special_read("r-1") == read
    assert [r.correlation_id for r in await store.open_special_reads("M-1")] == ["r-1"]
    assert await store.special_reads("M-1", start=T - timedelta(hours=1), end=T + timedelta(hours=1)) == []
    done = read.moved(ReadState.COMPLETED, T + timedelta(seconds=1), ts=T, values=((Channel.ENERGY_IMPORT, 12345.6),),
                      detail="polled now")
    await store.save_special_read(done)
    assert await store.get_special_read("r-1") == done
    assert await store.open_special_reads("M-1") == []
    assert await store.special_reads("M-1", start=T, end=T + timedelta(microseconds=1)) == [done]
    assert await store.special_reads("M-1", start=T + timedelta(microseconds=1), end=T + timedelta(hours=1)) == []
    assert await store.special_reads("M-2", start=T - timedelta(hours=1), end=T + timedelta(hours=1)) == []
    failed = SpecialRead("r-2", "M-1", ReadReason.INQUIRY, T, state=ReadState.TIMED_OUT, detail="no answer")
    await store.save_special_read(failed)
    assert await store.special_reads("M-1", start=T - timedelta(hours=1), end=T + timedelta(hours=1)) == [done]
    assert await store.get_special_read("nope") is None
