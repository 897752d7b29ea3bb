"""Concurrent keyed lookups joined into one query while the database is busy with others.

Under load the API asks for "the latest readings of meter X" many times at once. Each ask
alone costs a pool checkout, a statement and a round trip, which in the API process cost
more CPU than the query costs PostgreSQL. A `Coalescer` lets up to `limit` queries run at
once; a call arriving while they all run waits, and the next query to start takes every
waiting key with it. A lone call runs at once, as before (no timer, no added latency);
only calls that would have queued for a connection anyway are joined.

No background task: the caller that finds room runs the query itself (the leader); when
it finishes it hands the lead to one waiting caller, who runs the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: The result a waiting caller gets when it is to run the next batch itself.
_LEAD: object = object()


class Coalescer(Generic[K, V]):
    """`await get(key)`: the value `fetch` returned for `key`, or `missing` if it left the key out.

    `fetch(keys)` looks up every key it is given in one call (at most `max_batch` keys) and
    returns a mapping; a key it leaves out has no value. An exception from `fetch` goes to
    every caller of that batch. A cancelled caller (or one whose process is stopping) leaves
    the others waiting for the next batch, never stranded.
    """

    def __init__(self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], missing: V, *,
                 limit: int = 2, max_batch: int = 64) -> None:  # fmt: skip
        if limit < 1 or max_batch < 1:
            msg = f"Coalescer limit and max_batch must be at least 1, got {limit} and {max_batch}"
            raise ValueError(msg)
        self._fetch = fetch
        self._missing = missing
        self._limit = limit
        self._max_batch = max_batch
        #: Batches running, plus a lead handed to a waiter that has not started yet.
        self._running = 0
        #: A lead was handed to a waiter that has not taken the waiting keys yet: it will
        #: take them, so a second lead now would find nothing left to fetch.
        self._lead_pending = False
        self._waiting: dict[K, list[asyncio.Future[object]]] = {}

    async def get(self, key: K) -> V:
        if self._running >= self._limit or self._waiting:
            fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, []).append(fut)
            try:
                got = await fut
            except BaseException:
                # Cancelled (or the process stopping) while waiting. If the lead had just been
                # handed to us, hand it on, or everyone behind us waits for ever.
                self._forget(key, fut)
                if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is _LEAD:
                    self._running -= 1
                    self._lead_pending = False
                    self._hand_on()
                raise
            if got is not _LEAD:
                return got  # type: ignore[return-value]  # futures carry V or _LEAD
            self._lead_pending = False
        else:
            self._running += 1
        # Leading: our slot in _running is taken (by us, or by whoever handed us the lead).
        try:
            return await self._run(key)
        finally:
            self._running -= 1
            self._hand_on()

    async def _run(self, key: K) -> V:
        batch = self._take(key)
        self._hand_on()  # keys beyond max_batch may use another free slot now
        try:
            found = await self._fetch(list(batch))
            values = {k: found.get(k, self._missing) for k in batch}  # fails here, not halfway through answering
        except Exception as exc:
            # A Future refuses StopIteration (it would end the awaiting coroutine silently).
            err = RuntimeError(f"fetch raised {exc!r}") if isinstance(exc, StopIteration) else exc
            for futs in batch.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(err)
            raise
        except BaseException:
            # Our own caller was cancelled (or the process is stopping): not an answer for the
            # others, who wait for the next batch.
            for k, futs in batch.items():
                for f in futs:
                    if not f.done():
                        self._waiting.setdefault(k, []).append(f)
            raise
        for k, futs in batch.items():
            for f in futs:
                if not f.done():
                    f.set_result(values[k])
        return values[key]

    def _take(self, key: K) -> dict[K, list[asyncio.Future[object]]]:
        """Our key and up to max_batch - 1 waiting keys, oldest first, out of _waiting."""
        batch = {key: self._waiting.pop(key, [])}
        while self._waiting and len(batch) < self._max_batch:
            k = next(iter(self._waiting))
            batch[k] = self._waiting.pop(k)
        return batch

    def _hand_on(self) -> None:
        """Wake one waiting caller to run the next batch, if there is room."""
        while self._waiting and self._running < self._limit and not self._lead_pending:
            k = next(iter(self._waiting))
            live = next((f for f in self._waiting[k] if not f.done()), None)
            if live is None:
                del self._waiting[k]  # only callers that have gone are left under this key
                continue
            self._running += 1
            self._lead_pending = True
            live.set_result(_LEAD)

    def _forget(self, key: K, fut: asyncio.Future[object]) -> None:
        futs = self._waiting.get(key)
        if futs is not None and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._waiting[key]
