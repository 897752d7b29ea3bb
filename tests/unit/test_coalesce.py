"""storage.coalesce.Coalescer: concurrent lookups joined into one fetch, nobody stranded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage.coalesce import Coalescer


class Fetches:
    """A fetch that records each call's keys; when gated, call i waits until the test opens it."""

    def __init__(self, *, gated: bool = False, fail: BaseException | None = None) -> None:
        self.calls: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.gated = gated
        self.fail = fail

    async def __call__(self, keys: list[str]) -> dict[str, str]:
        self.calls.append(list(keys))
        gate = asyncio.Event()
        self.gates.append(gate)
        if not self.gated:
            gate.set()
        await gate.wait()
        if self.fail is not None:
            raise self.fail
        return {k: f"value of {k}" for k in keys if not k.startswith("none")}

    async def started(self, n: int) -> None:
        """Until `n` fetches have started."""
        for _ in range(100):
            if len(self.calls) >= n:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{n} fetches expected, {len(self.calls)} started: {self.calls}")

    def open_all(self) -> None:
        self.gated = False
        for gate in self.gates:
            gate.set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_call_fetches_its_own_key_at_once() -> None:
    fetch = Fetches()
    c: Coalescer[str, str] = Coalescer(fetch, "missing")

    assert await c.get("a") == "value of a"
    assert await c.get("none-1") == "missing"
    assert fetch.calls == [["a"], ["none-1"]]


async def test_calls_made_while_the_limit_runs_share_the_next_fetch() -> None:
    fetch = Fetches(gated=True)
    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=1)
    first = asyncio.create_task(c.get("a"))
    await fetch.started(1)
    later = [asyncio.create_task(c.get(k)) for k in ("b", "c", "b", "none-2")]
    await settle()
    assert fetch.calls == [["a"]]  # the others wait: the limit is one fetch at a time

    fetch.open_all()
    got = await asyncio.gather(first, *later)

    assert got == ["value of a", "value of b", "value of c", "value of b", "missing"]
    assert fetch.calls == [["a"], ["b", "c", "none-2"]]  # one fetch for all waiting keys, b once


async def test_up_to_limit_fetches_run_at_once() -> None:
    fetch = Fetches(gated=True)
    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=2)
    tasks = [asyncio.create_task(c.get(k)) for k in ("a", "b", "c", "d")]
    await settle()
    assert fetch.calls == [["a"], ["b"]]

    fetch.open_all()
    assert await asyncio.gather(*tasks) == ["value of a", "value of b", "value of c", "value of d"]
    assert sorted(map(sorted, fetch.calls)) == [["a"], ["b"], ["c", "d"]]


async def test_an_error_reaches_every_caller_of_its_batch_and_the_next_call_fetches_again() -> None:
    fetch = Fetches(gated=True, fail=ConnectionError("database down"))
    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=1)
    tasks = [asyncio.create_task(c.get(k)) for k in ("a", "b", "c")]
    await fetch.started(1)
    fetch.open_all()

    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert [type(r) for r in results] == [ConnectionError] * 3
    fetch.fail = None
    assert await c.get("d") == "value of d"


async def test_a_cancelled_waiter_leaves_the_others_answered() -> None:
    fetch = Fetches(gated=True)
    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=1)
    first = asyncio.create_task(c.get("a"))
    await fetch.started(1)
    gone, kept = asyncio.create_task(c.get("b")), asyncio.create_task(c.get("c"))
    await settle()
    gone.cancel()
    await settle()

    fetch.open_all()

    assert [await first, await kept] == ["value of a", "value of c"]
    assert gone.cancelled()
    assert fetch.calls == [["a"], ["c"]]


async def test_a_cancelled_leader_hands_its_waiters_to_a_new_fetch() -> None:
    fetch = Fetches(gated=True)
    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=1)
    leader = asyncio.create_task(c.get("a"))
    await fetch.started(1)
    b, c_ = asyncio.create_task(c.get("b")), asyncio.create_task(c.get("c"))
    await settle()
    fetch.gates[0].set()
    assert await leader == "value of a"
    await fetch.started(2)  # b's caller was handed the lead: it fetches b and c
    assert fetch.calls[1] == ["b", "c"]

    b.cancel()  # the batch's leader gives up mid-fetch
    await fetch.started(3)  # c's caller takes the lead and fetches again

    assert fetch.calls[2] == ["c"]
    fetch.open_all()
    assert await c_ == "value of c"
    assert b.cancelled()


async def test_a_waiter_cancelled_just_after_it_was_handed_the_lead_hands_it_on() -> None:
    fetch = Fetches(gated=True)
    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=1)
    first = asyncio.create_task(c.get("a"))
    await fetch.started(1)
    chosen, other = asyncio.create_task(c.get("b")), asyncio.create_task(c.get("c"))
    await settle()

    # Cancel b's caller in the same step as the finishing leader hands it the lead, before it runs.
    hand_on = c._hand_on

    def hand_on_then_cancel() -> None:
        hand_on()
        if not chosen.done():
            chosen.cancel()

    c._hand_on = hand_on_then_cancel  # type: ignore[method-assign]
    fetch.open_all()

    assert await first == "value of a"
    assert await asyncio.wait_for(other, timeout=5) == "value of c"  # c is not stranded
    assert chosen.cancelled()
    assert fetch.calls == [["a"], ["c"]]


async def test_a_fetch_that_breaks_its_contract_fails_its_callers_instead_of_stranding_them() -> None:
    first_done = asyncio.Event()

    async def fetch(keys: list[str]) -> Any:
        if keys == ["a"]:
            await first_done.wait()  # b and c queue meanwhile and share the next fetch
            return {"a": "value of a"}
        return ["not", "a", "mapping"]

    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=1)
    tasks = [asyncio.create_task(c.get(k)) for k in ("a", "b", "c")]
    await settle()
    first_done.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)

    assert results[0] == "value of a"
    assert [type(r) for r in results[1:]] == [AttributeError, AttributeError]  # b and c: answered, with the error


async def test_a_fetch_raising_stop_iteration_reaches_the_batch_as_an_error() -> None:
    def fetch(keys: list[str]) -> Any:
        raise StopIteration  # a future cannot carry StopIteration itself

    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=1)
    blocker = asyncio.Event()

    async def slow(keys: list[str]) -> dict[str, str]:
        await blocker.wait()
        return {}

    c._fetch = slow  # the first batch waits, so b and c share the second one
    first = asyncio.create_task(c.get("a"))
    await settle()
    rest = [asyncio.create_task(c.get(k)) for k in ("b", "c")]
    await settle()
    c._fetch = fetch
    blocker.set()

    results = await asyncio.wait_for(asyncio.gather(first, *rest, return_exceptions=True), timeout=5)

    assert results[0] == "missing"
    assert all(isinstance(r, RuntimeError) and "StopIteration" in str(r) for r in results[1:]), results


async def test_a_batch_takes_at_most_max_batch_keys_and_the_rest_use_another_slot() -> None:
    fetch = Fetches(gated=True)
    c: Coalescer[str, str] = Coalescer(fetch, "missing", limit=2, max_batch=3)
    running = [asyncio.create_task(c.get(k)) for k in "ab"]
    await fetch.started(2)
    waiting = [asyncio.create_task(c.get(k)) for k in "cdefgh"]
    await settle()

    fetch.gates[0].set()
    fetch.gates[1].set()
    await asyncio.gather(*running)
    await fetch.started(4)

    assert fetch.calls[2:] == [["c", "d", "e"], ["f", "g", "h"]]
    fetch.open_all()
    assert await asyncio.gather(*waiting) == [f"value of {k}" for k in "cdefgh"]


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Fetches(), "missing", limit=0)
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Fetches(), "missing", max_batch=0)
