"""The read side of the PostgreSQL store (the API's queries), as a mixin of TimescaleStore.

Every query is shaped for an index: `readings_key` (meter_id, channel, ts) for per-channel
ranges and "latest" probes scanned backwards, `readings_meter_ts` for a meter's readings
of all channels, `readings_seq_idx` for the feed, `readings_flagged` (a partial index of
the few non-plain reads) for consumption and billing reads.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import psycopg

from gateway.errors import NotFound
from gateway.model import Channel, Kind, Reading, Status
from storage import boundary, trail
from storage import consumption as cons
from storage.coalesce import Coalescer
from storage.records import EDIT, FeedPage, LastValue, SilentRule
from storage.rows import CHANNEL, converted
from storage.sql.queries import SqlQueries
from storage.timescale import rows

Conn = psycopg.AsyncConnection[tuple[Any, ...]]

# Planning a query on a hypertable weighs every chunk: on a year of 7-day chunks that
# costs 5-30 ms, more than running the query. Reads over a time range (one meter's
# readings, consumption, the feed) are prepared (planned once per connection) and run with
# a generic plan, in which TimescaleDB drops the chunks outside the parameters' time range
# when the executor starts; a new chunk invalidates the plan. Set per read transaction
# only: the write path and keyed lookups keep PostgreSQL's own choice.
GENERIC_PLANS = "SET LOCAL plan_cache_mode = force_generic_plan"

# The last billable read at or before each probe time: one backward index probe each.
_CLOSINGS = (
    "SELECT b.i, l.* FROM unnest(%(bounds)b::timestamptz[]) WITH ORDINALITY AS b(t, i)"
    f" LEFT JOIN LATERAL (SELECT {rows.READING_COLS} FROM readings AS r"
    "  WHERE r.meter_id = %(m)s AND r.channel = %(ch)s AND r.ts <= b.t AND r.status = ANY(%(ok)s)"
    "  ORDER BY r.ts DESC LIMIT 1) AS l ON true ORDER BY b.i"
)
# The last real billable read within the window before each of the given times (asked only
# for times whose last billable read is an estimate). Bounded on both sides, so TimescaleDB
# excludes the other chunks when the probe runs.
_REAL = (
    "SELECT b.i, l.* FROM unnest(%(times)b::timestamptz[], %(idx)b::int4[]) AS b(t, i)"
    f" CROSS JOIN LATERAL (SELECT {rows.READING_COLS} FROM readings AS r"
    "  WHERE r.meter_id = %(m)s AND r.channel = %(ch)s AND r.ts <= b.t AND r.ts >= b.t - %(w)s::interval"
    f"  AND {boundary.real_sql('r')} ORDER BY r.ts DESC LIMIT 1) AS l"
)
# The first billable read after the first probe time (the opening read after the start).
_FIRST_AFTER = (
    f"SELECT {rows.READING_COLS} FROM readings WHERE meter_id = %(m)s AND channel = %(ch)s"
    " AND ts > %(lo)s AND ts <= %(hi)s AND status = ANY(%(ok)s) ORDER BY ts LIMIT 1"
)
_FLAGGED = (
    f"SELECT {rows.READING_COLS} FROM readings WHERE meter_id = %(m)s AND channel = %(ch)s"
    f" AND ts >= %(lo)s AND ts <= %(hi)s AND {cons.FLAGGED_SQL} ORDER BY ts"
)

# Up to this many bounds, one backward probe each (_CLOSINGS); beyond, one probe per
# bucket bounded on both sides. A probe with no lower time bound cannot exclude chunks:
# on a year of 7-day chunks each one walks the chunks, and a year of daily buckets made
# 366 walks. Bounded, TimescaleDB excludes chunks at run time and each probe reads one.
_PROBE_BOUNDS = 8
# The last usable read of each bucket (lo, hi]; empty buckets return no row. The span's
# own bounds (first lo, last hi) are known when the executor starts, so TimescaleDB drops
# the chunks outside the span once; each probe's run-time exclusion then weighs the few
# chunks of the span, not every chunk of the table (on a year of 7-day chunks that was
# most of the cost of a probe).
_LAST_PER_BUCKET = (
    "SELECT b.i, l.* FROM unnest(%(lo)b::timestamptz[], %(hi)b::timestamptz[]) WITH ORDINALITY AS b(lo, hi, i)"
    f" CROSS JOIN LATERAL (SELECT {rows.READING_COLS} FROM readings AS r WHERE r.meter_id = %(m)s"
    "  AND r.channel = %(ch)s AND r.ts > %(span_lo)s AND r.ts <= %(span_hi)s"
    "  AND r.ts > b.lo AND r.ts <= b.hi AND r.status = ANY(%(ok)s)"
    "  ORDER BY r.ts DESC LIMIT 1) AS l"
)
#: Buckets are probed in spans of at most this much time (at least one bucket a span).
_SPAN = timedelta(days=31)
_LAST_AT_OR_BEFORE = (
    f"SELECT {rows.READING_COLS} FROM readings WHERE meter_id = %(m)s AND channel = %(ch)s AND ts <= %(b0)s"
    " AND status = ANY(%(ok)s) ORDER BY ts DESC LIMIT 1"
)


# Per active meter: its newest reading or balance update since :since, and after how long it
# counts as silent (the rule's own value for the meters listed, else the default). Each LATERAL
# is one probe of a (meter_id, ts) index per chunk.
_SINCE = """LEFT JOIN LATERAL (SELECT ts FROM readings WHERE meter_id = m.meter_id AND ts >= :since
                       ORDER BY ts DESC LIMIT 1) AS r ON true
    LEFT JOIN LATERAL (SELECT ts FROM balances WHERE meter_id = m.meter_id AND ts >= :since
                       ORDER BY ts DESC LIMIT 1) AS b ON true"""
_ACTIVITY = f"""
WITH t AS (SELECT * FROM unnest(:after_ids::text[], :after_s::float8[]) AS t(meter_id, after_s)),
a AS (
    SELECT m.meter_id, m.status, m.utility, m.payg, greatest(r.ts, b.ts) AS last_seen,
        make_interval(secs => coalesce(t.after_s, :default_s)) AS after
    FROM meters AS m
    LEFT JOIN t ON t.meter_id = m.meter_id
    {_SINCE}
    WHERE m.status = 'active' AND m.meter_id > :after_id
)"""


class TimescaleQueries(SqlQueries):
    """PostgreSQL's own read paths and summaries' SQL; the store provides `_conn`, `_fetch` and `_latest` (a Coalescer of
    `_latest_of`)."""

    _latest: Coalescer[str, list[Any]]
    _activity = _ACTIVITY
    _silent = "(a.last_seen IS NULL OR a.last_seen < :now - a.after)"
    _activity_since = (f"SELECT m.meter_id, m.status, m.utility, m.payg, greatest(r.ts, b.ts) FROM meters AS m {_SINCE}"
                       " ORDER BY m.meter_id")
    _latest_balances = ("SELECT l.* FROM meters AS m CROSS JOIN LATERAL (SELECT {cols} FROM balances AS b"
                        " WHERE b.meter_id = m.meter_id ORDER BY b.ts DESC LIMIT 1) AS l WHERE m.payg")

    def _rule_params(self, rule: SilentRule, after_id: str = "") -> dict[str, Any]:
        return {"after_ids": list(rule.after), "after_s": [a.total_seconds() for a in rule.after.values()],
                "default_s": rule.default_after.total_seconds(), "since": rows.utc(rule.since),
                "now": rows.utc(rule.now), "after_id": after_id}

    def _conn(self, action: str) -> AbstractAsyncContextManager[Conn]:
        raise NotImplementedError

    async def _fetch(self, action: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        raise NotImplementedError

    async def _fetch_generic(self, action: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        raise NotImplementedError

    async def latest_readings(self, meter_id: str) -> list[Reading]:
        """The latest reading of each channel, ordered by channel (see `_latest_of`). Calls
        made while others are running are answered together (storage.coalesce)."""
        # Rows are converted per caller: a row that does not convert fails only its own meter's
        # callers, not the whole batch.
        return [rows.reading(r) for r in await self._latest.get(meter_id)]

    async def _latest_of(self, meter_ids: list[str]) -> dict[str, list[Any]]:
        """The rows of the latest reading of each channel of each meter, by meter: one backward index probe per
        channel the meter has (meter_channels, kept by every write), not DISTINCT ON,
        which reads the meter's whole history where TimescaleDB's SkipScan is not
        available, nor a probe per canonical channel: one for a channel the meter lacks
        visits every chunk."""
        found = await self._fetch(
            f"latest readings of {meter_ids[0]}" if len(meter_ids) == 1 else
            f"latest readings of {len(meter_ids)} meters at once",
            "SELECT l.* FROM meter_channels AS c"
            f" CROSS JOIN LATERAL (SELECT {rows.READING_COLS} FROM readings AS r"
            "  WHERE r.meter_id = c.meter_id AND r.channel = c.channel ORDER BY r.ts DESC LIMIT 1) AS l"
            " WHERE c.meter_id = ANY(%(m)s) ORDER BY l.meter_id, l.channel",
            {"m": meter_ids},
        )
        out: dict[str, list[Any]] = {}
        for r in found:
            out.setdefault(r[1], []).append(r)  # r[1]: meter_id (rows.READING_COLS)
        return out

    async def last_cumulative(self) -> list[LastValue]:
        """The latest reading of every (meter, channel) whose latest reading is cumulative:
        one backward index probe per pair of meter_channels, so the cost grows with
        meters, not with rows."""
        found = await self._fetch(
            "last cumulative values",
            "SELECT l.meter_id, l.channel, l.ts, l.value FROM meter_channels AS c"
            " CROSS JOIN LATERAL (SELECT meter_id, channel, ts, value, kind FROM readings AS r"
            "  WHERE r.meter_id = c.meter_id AND r.channel = c.channel ORDER BY r.ts DESC LIMIT 1) AS l"
            " WHERE l.kind = %(kind)s ORDER BY l.meter_id, l.channel",
            {"kind": Kind.CUMULATIVE.value},
        )
        return [LastValue(r[0], CHANNEL[r[1]], rows.utc(r[2]), r[3]) for r in found]

    # -- wave 2 -------------------------------------------------------------------
    async def feed(self, *, after: int, limit: int = 1000) -> FeedPage:
        """Readings with seq > after in seq order, up to the visibility watermark (see
        migration 0002): a seq a still-running writer may yet commit is never passed."""
        async with self._conn("feed") as conn, conn.transaction():
            await conn.execute(GENERIC_PLANS)
            # Two statements on purpose: the rows' snapshot must be taken after the
            # watermark was read (READ COMMITTED: each statement has its own snapshot).
            cur = await conn.execute("SELECT meter_gateway_feed_watermark()")
            row = await cur.fetchone()
            mark = row[0] if row and row[0] is not None else 0
            cur = await conn.execute(
                f"SELECT {rows.READING_COLS} FROM readings WHERE seq > %(after)s AND seq <= %(mark)s"
                " ORDER BY seq LIMIT %(limit)s",
                {"after": after, "mark": mark, "limit": limit},
                prepare=True,
                binary=True,
            )
            items = await converted(await cur.fetchall(), rows.reading)
        return FeedPage(items, items[-1].seq if items and items[-1].seq is not None else after)

    async def _probe(self, meter_id: str, channel: Channel, times: list[datetime], *,
                     flagged_until: datetime | None) -> boundary.Probes:  # fmt: skip
        params: dict[str, Any] = {"m": meter_id, "ch": channel.value, "bounds": times,
                                  "ok": [s.value for s in boundary.BILLABLE]}
        async with self._conn(f"consumption of {meter_id}") as conn, conn.transaction():
            # One snapshot for every query (READ COMMITTED would take one per statement).
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await conn.execute(GENERIC_PLANS)
            if len(times) <= _PROBE_BOUNDS:
                cur = await conn.execute(_CLOSINGS, params, prepare=True, binary=True)
                last = [None if r[1] is None else rows.reading(r[1:]) for r in await cur.fetchall()]
            else:
                last = await _closings_by_bucket(conn, params)
            # Only where the last billable read is an estimate (rare): is a real one close enough?
            estimates = [i for i, r in enumerate(last) if r is not None and boundary.is_estimated(r)]
            real: dict[int, Reading] = {}
            if estimates:
                cur = await conn.execute(_REAL, {**params, "times": [times[i] for i in estimates], "idx": estimates,
                                                 "w": self.estimate_window}, prepare=True, binary=True)
                real = {r[0]: rows.reading(r[1:]) for r in await cur.fetchall()}
            first_after = None
            if last[0] is None:
                cur = await conn.execute(_FIRST_AFTER, {**params, "lo": times[0], "hi": times[-1]}, prepare=True,
                                         binary=True)
                row = await cur.fetchone()
                first_after = None if row is None else rows.reading(row)
            flagged: list[Reading] = []
            if flagged_until is not None:
                first = last[0]
                params["lo"] = min(first.ts if first is not None else times[0], times[0] - self.estimate_window)
                params["hi"] = flagged_until
                cur = await conn.execute(_FLAGGED, params, prepare=True, binary=True)
                flagged = [rows.reading(r) for r in await cur.fetchall()]
        return boundary.Probes(last, real, first_after, flagged)


async def _closings_by_bucket(conn: Conn, params: dict[str, Any]) -> list[Reading | None]:
    """For each bound, the last usable read at or before it (same answer as _CLOSINGS)."""
    bounds: list[datetime] = params["bounds"]
    cur = await conn.execute(_LAST_AT_OR_BEFORE, {**params, "b0": bounds[0]}, prepare=True, binary=True)
    row = await cur.fetchone()
    closings: list[Reading | None] = [None if row is None else rows.reading(row)]
    last: dict[int, Reading] = {}
    for first, end in _spans(bounds):
        scan = {**params, "lo": bounds[first:end], "hi": bounds[first + 1:end + 1], "span_lo": bounds[first],
                "span_hi": bounds[end]}  # fmt: skip
        cur = await conn.execute(_LAST_PER_BUCKET, scan, prepare=True, binary=True)
        last.update((first + r[0], rows.reading(r[1:])) for r in await cur.fetchall())
    for i in range(1, len(bounds)):
        # An empty bucket is closed by the read that closed the one before it.
        closings.append(last.get(i, closings[i - 1]))
    return closings


def _spans(bounds: list[datetime]) -> list[tuple[int, int]]:
    """Consecutive buckets grouped by _SPAN: (first, end) covers buckets first..end-1, the
    bucket k being (bounds[k], bounds[k + 1]]."""
    spans, first, n = [], 0, len(bounds) - 1
    while first < n:
        end = first + 1
        while end < n and bounds[end + 1] - bounds[first] <= _SPAN:
            end += 1
        spans.append((first, end))
        first = end
    return spans


async def set_status_in(conn: Conn, meter_id: str, channel: Channel, ts: datetime, status: Status, *,
                        note: str, by: str, now: datetime, key_id: str | None = None) -> Reading:  # fmt: skip
    """Inside the caller's transaction: new status and seq, and a verification log line; the
    status the reading has already changes nothing (same seq, no line)."""
    key = {"m": meter_id, "ch": channel.value, "ts": rows.utc(ts)}
    cur = await conn.execute(
        f"SELECT {rows.READING_COLS} FROM readings WHERE meter_id = %(m)s AND channel = %(ch)s AND ts = %(ts)s"
        " FOR UPDATE", key
    )
    found = await cur.fetchone()
    if found is None:
        raise NotFound("reading", f"{meter_id}/{channel.value}@{rows.utc(ts).isoformat()}")
    current = rows.reading(found)
    if current.status is status:  # a repeat: nothing changes, no reader is sent it again
        return current
    await conn.execute("SELECT meter_gateway_feed_register()")
    cur = await conn.execute(
        "UPDATE readings SET status = %(status)s, seq = nextval('readings_seq')"
        f" WHERE meter_id = %(m)s AND channel = %(ch)s AND ts = %(ts)s RETURNING {rows.READING_COLS}",
        {**key, "status": status.value},
    )
    updated = await cur.fetchone()
    assert updated is not None  # locked above
    await conn.execute(
        "INSERT INTO verification_log (meter_id, channel, ts, previous_status, status, note, actor, key_id,"
        " created_at) VALUES (%(m)s, %(ch)s, %(ts)s, %(prev)s, %(status)s, %(note)s, %(by)s, %(key)s, %(now)s)",
        {**key, "prev": current.status.value, "status": status.value, "note": note, "by": by, "key": key_id,
         "now": rows.utc(now)},
    )
    return rows.reading(updated)



async def edit_in(conn: Conn, meter_id: str, channel: Channel, ts: datetime, value: float, *,
                  note: str, by: str, now: datetime, key_id: str | None = None) -> Reading:  # fmt: skip
    """Inside the caller's transaction: a person's corrected value (Store.edit_reading)."""
    trail.check_edit(value)
    key = {"m": meter_id, "ch": channel.value, "ts": rows.utc(ts)}
    cur = await conn.execute(
        f"SELECT {rows.READING_COLS} FROM readings WHERE meter_id = %(m)s AND channel = %(ch)s AND ts = %(ts)s"
        " FOR UPDATE", key
    )
    found = await cur.fetchone()
    if found is None:
        raise NotFound("reading", f"{meter_id}/{channel.value}@{rows.utc(ts).isoformat()}")
    current = rows.reading(found)
    if trail.unchanged(current, value):
        return current
    await conn.execute("SELECT meter_gateway_feed_register()")
    cur = await conn.execute(
        "UPDATE readings SET value = %(value)s, status = %(status)s, seq = nextval('readings_seq')"
        f" WHERE meter_id = %(m)s AND channel = %(ch)s AND ts = %(ts)s RETURNING {rows.READING_COLS}",
        {**key, "value": value, "status": trail.EDITED.value},
    )
    updated = await cur.fetchone()
    assert updated is not None  # locked above
    await conn.execute(
        "INSERT INTO verification_log (meter_id, channel, ts, previous_status, status, note, actor, key_id,"
        " created_at, action, previous_value, value, rule, recorded_at) VALUES (%(m)s, %(ch)s, %(ts)s, %(prev)s,"
        " %(status)s, %(note)s, %(by)s, %(key)s, %(now)s, %(action)s, %(prev_value)s, %(value)s, %(rule)s,"
        " %(recorded)s)",
        {**key, "prev": current.status.value, "status": trail.EDITED.value, "note": note, "by": by, "key": key_id,
         "now": rows.utc(now), "action": EDIT, "prev_value": current.value, "value": value,
         "rule": trail.edit_rule(current),
         "recorded": None if current.received_at is None else rows.utc(current.received_at)},
    )
    return rows.reading(updated)

__all__ = ["TimescaleQueries", "edit_in", "set_status_in"]
