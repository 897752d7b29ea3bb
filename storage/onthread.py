"""One hop to an aiosqlite connection's thread for a whole unit of work.

Each `await db.execute(...)` is a round trip: the statement goes to the connection's thread, and
its result comes back only when the event loop next runs the callback. With the pollers and the
pipeline keeping the loop busy, each return waits behind whatever runs then: a store write of
eight statements and a spool delete of four waited a dozen times per batch, and at 2,000 meters
a second the forwarder fell behind for good (issue 26). A function run on the connection's thread
does all its statements in one hop (and, being one call, runs whole even if its caller is cancelled).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar, cast

import aiosqlite

T = TypeVar("T")


async def on_thread(db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(connection)` on `db`'s own thread, after every statement queued before it.

    aiosqlite has no public call for this; `_execute` (queue a function for its thread) and `_conn`
    (the sqlite3 connection) are what all its public methods are made of, in every version the
    project allows (>=0.20,<1). ValueError if the connection is closed, as aiosqlite's own calls.
    """
    conn = cast(Any, db)
    return cast(T, await conn._execute(lambda: fn(conn._conn)))
