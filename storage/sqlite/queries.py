"""The read side of the embedded store (the API's queries), as a mixin of SqliteStore.

Each query is one statement on the reader connection, so it sees one consistent snapshot
(WAL) and never a half-written batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from gateway.model import Channel, Kind, Reading, Status
from storage import boundary
from storage import consumption as cons
from storage.records import FeedPage, LastValue, SilentRule
from storage.rows import CHANNEL, converted
from storage.sql.queries import SqlQueries
from storage.sqlite import rows

_ALL_CHANNELS = json.dumps([c.value for c in Channel])
_NCOLS = len(rows.READING_COLS.split(","))
_NULLS = ", ".join(["NULL"] * _NCOLS)


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in rows.READING_COLS.split(","))


_BILLABLE = ", ".join(f"'{s.value}'" for s in boundary.BILLABLE)
# The last billable read at or before `t` (an index probe on (meter_id, channel, ts)).
_LAST = ("SELECT p.seq FROM readings AS p WHERE p.meter_id = :m AND p.channel = :ch AND p.ts <= {t}"
         f" AND p.status IN ({_BILLABLE}) ORDER BY p.ts DESC LIMIT 1")
# Part 0: for each probe time, its last billable read and, only where that is an estimate
# (SQLite runs a CASE branch's subquery only when it is taken), the last real one within
# the window before the time. Part 3: the first billable read after the first time.
_PROBES = f"""
SELECT 0, b.key, {_cols("r")}, {_cols("q")} FROM json_each(:times) AS b
LEFT JOIN readings AS r ON r.seq = ({_LAST.format(t="b.value")})
LEFT JOIN readings AS q ON q.seq = CASE WHEN {boundary.estimate_sql("r")} THEN (
    SELECT p.seq FROM readings AS p WHERE p.meter_id = :m AND p.channel = :ch AND p.ts <= b.value
      AND p.ts >= b.value - :w AND {boundary.real_sql("p")} ORDER BY p.ts DESC LIMIT 1) END
UNION ALL
SELECT 3, NULL, {_cols("f")}, {_NULLS} FROM readings AS f WHERE f.seq = (
    SELECT p.seq FROM readings AS p WHERE p.meter_id = :m AND p.channel = :ch AND p.ts > :lo AND p.ts <= :hi
      AND p.status IN ({_BILLABLE}) ORDER BY p.ts LIMIT 1)"""
# Part 1: the flagged reads from the window before the first time's read to :until (the
# partial index). One statement with the parts above, so all come from the same snapshot.
_FLAGGED = f"""
UNION ALL
SELECT 1, NULL, {rows.READING_COLS}, {_NULLS} FROM readings
WHERE meter_id = :m AND channel = :ch AND ts <= :until AND {cons.FLAGGED_SQL}
  AND ts >= min(coalesce((SELECT p.ts FROM readings AS p WHERE p.seq = ({_LAST.format(t=":lo")})), :lo), :lo - :w)"""
_ORDER = " ORDER BY 1, 2, 6"
# The canonical channels as an SQL literal (our constant: JSON text without a quote).
_EACH_CHANNEL = f"json_each('{_ALL_CHANNELS}')"
# Per active meter: its newest reading or balance update since :since (-1: none), and after how
# long it counts as silent (the rule's own value for the meters in :after, else :default).
# A reading's newest ts is one backward probe of readings_cover per channel (there is no
# (meter_id, ts) index on readings since migration 9: each index costs every insert), a balance's
# one probe of its (meter_id, ts) key; the thresholds are a materialized CTE, which SQLite looks
# up through an automatic index.
_LAST_SEEN = f"""max(coalesce((SELECT max((SELECT max(r.ts) FROM readings AS r WHERE r.meter_id = m.meter_id
                                   AND r.channel = c.value AND r.ts >= :since)) FROM {_EACH_CHANNEL} AS c), -1),
            coalesce((SELECT max(b.ts) FROM balances AS b WHERE b.meter_id = m.meter_id AND b.ts >= :since), -1))"""
# Silent: nothing at or after max(:since, :now - after), that is last_seen < :now - after. Said
# with EXISTS so that a meter that is not silent stops at its first recent channel (one probe for
# most meters) instead of taking all its channels' newest readings, and the fleet counts never
# compute last_seen at all.
_SILENT = f"""NOT EXISTS (SELECT 1 FROM {_EACH_CHANNEL} AS c WHERE EXISTS (SELECT 1 FROM readings AS r
                WHERE r.meter_id = a.meter_id AND r.channel = c.value AND r.ts >= max(:since, :now - a.after_us)))
    AND NOT EXISTS (SELECT 1 FROM balances AS b WHERE b.meter_id = a.meter_id AND b.ts >= max(:since, :now - a.after_us))"""
_ACTIVITY = f"""
WITH t(meter_id, after_us) AS MATERIALIZED (SELECT key, value FROM json_each(:after_map)),
a AS (
    SELECT m.meter_id, m.status, m.utility, m.payg, {_LAST_SEEN} AS last_seen,
        coalesce((SELECT t.after_us FROM t WHERE t.meter_id = m.meter_id), :default_us) AS after_us
    FROM meters AS m WHERE m.status = 'active' AND m.meter_id > :after_id
)"""


# A meter's readings of every channel in (ts, channel) order: one range of readings_cover per
# channel (channel fixed, so each comes in ts order), merged by SQLite's compound-select merge,
# which pulls from each range only as far as the LIMIT needs: no sort, no table lookup. The
# keyset (ts, channel) > (:a_ts, :a_ch) is, for a channel c, ts > :a_ts when c <= :a_ch and
# ts >= :a_ts otherwise; ts being integer microseconds, ts >= :a_ts + (c <= :a_ch).
_RANGE_ARM = ("SELECT {cols} FROM readings WHERE meter_id = :m AND channel = '{ch}'"
              " AND ts >= max(:start, :a_ts + ('{ch}' <= :a_ch)) AND ts < :end{status}")


def _range_sql(*, status: bool) -> str:
    arms = [_RANGE_ARM.format(cols=rows.READING_COLS, ch=c.value, status=" AND status = :status" if status else "")
            for c in Channel]
    return " UNION ALL ".join(arms) + " ORDER BY ts, channel LIMIT :limit"


_RANGE = {status: _range_sql(status=status) for status in (False, True)}
# A meter's readings before :t: one range of (meter_id, channel, ts) per channel the meter has
# (found by seeks, so a channel outside today's list is not missed).
_BEFORE = ("meter_id = :m AND channel IN (WITH RECURSIVE c(ch) AS ("
           " SELECT min(channel) FROM readings WHERE meter_id = :m UNION ALL"
           " SELECT (SELECT min(r.channel) FROM readings AS r WHERE r.meter_id = :m AND r.channel > c.ch)"
           " FROM c WHERE c.ch IS NOT NULL) SELECT ch FROM c WHERE ch IS NOT NULL) AND ts < :t")


class SqliteQueries(SqlQueries):
    """SQLite's own read paths; the store provides `_fetch` (on its read-only connection)."""

    _activity = _ACTIVITY
    _readings_before = _BEFORE
    _silent = _SILENT
    _activity_since = f"SELECT m.meter_id, m.status, m.utility, m.payg, {_LAST_SEEN} FROM meters AS m ORDER BY 1"
    _latest_balances = ("SELECT {cols} FROM balances WHERE seq IN (SELECT (SELECT b.seq FROM balances AS b"
                        " WHERE b.meter_id = m.meter_id ORDER BY b.ts DESC LIMIT 1) FROM meters AS m WHERE m.payg = 1)")

    async def _fetch(self, action: str, sql: str, params: Iterable[Any] | dict[str, Any] = ()) -> list[Any]:
        raise NotImplementedError

    def _rule_params(self, rule: SilentRule, after_id: str = "") -> dict[str, Any]:
        micro = timedelta(microseconds=1)
        return {"after_map": json.dumps({m: a // micro for m, a in rule.after.items()}), "since": rows.us(rule.since),
                "default_us": rule.default_after // micro, "now": rows.us(rule.now), "after_id": after_id}

    def _seen(self, v: Any) -> datetime | None:
        return None if v < 0 else rows.dt(v)

    async def latest_readings(self, meter_id: str) -> list[Reading]:
        """The latest reading of each channel, ordered by channel: one index probe per
        canonical channel, never a scan of the meter's history."""
        found = await self._fetch(
            f"latest readings of {meter_id}",
            f"SELECT {rows.READING_COLS} FROM readings WHERE seq IN ("
            " SELECT (SELECT r.seq FROM readings AS r WHERE r.meter_id = ? AND r.channel = c.value"
            "         ORDER BY r.ts DESC LIMIT 1)"
            " FROM json_each(?) AS c) ORDER BY channel",
            [meter_id, _ALL_CHANNELS],
        )
        return [rows.reading(r) for r in found]

    async def readings(self, meter_id: str, *, start: datetime, end: datetime,
                       channel: Channel | None = None, limit: int = 1000,
                       after: tuple[datetime, str] | None = None,
                       status: Status | None = None) -> list[Reading]:  # fmt: skip
        """Readings with start <= ts < end ordered by (ts, channel), keyset-paginated: one channel
        is one range of readings_cover (the shared query); every channel, a merge of those ranges."""
        if channel is not None:
            return await super().readings(meter_id, start=start, end=end, channel=channel, limit=limit, after=after,
                                          status=status)
        params: dict[str, Any] = {"m": meter_id, "start": rows.us(start), "end": rows.us(end), "limit": limit,
                                  "a_ts": rows.us(start), "a_ch": ""}
        if after is not None:
            params["a_ts"], params["a_ch"] = rows.us(after[0]), str(after[1])
        if status is not None:
            params["status"] = status.value
        found = await self._fetch(f"readings of {meter_id}", _RANGE[status is not None], params)
        return await converted(found, rows.reading)

    async def last_cumulative(self) -> list[LastValue]:
        """The latest reading of every (meter, channel) whose latest reading is cumulative.

        Walks the distinct meters with index seeks (a loose index scan) and probes each
        channel's newest row, so the cost grows with meters, not with history.
        """
        found = await self._fetch(
            "last cumulative values",
            "WITH RECURSIVE m(meter_id) AS ("
            " SELECT min(meter_id) FROM readings"
            " UNION ALL"
            " SELECT (SELECT min(r.meter_id) FROM readings AS r WHERE r.meter_id > m.meter_id)"
            " FROM m WHERE m.meter_id IS NOT NULL)"
            " SELECT meter_id, channel, ts, value FROM readings WHERE seq IN ("
            "  SELECT (SELECT r.seq FROM readings AS r WHERE r.meter_id = m.meter_id"
            "          AND r.channel = c.value ORDER BY r.ts DESC LIMIT 1)"
            "  FROM m, json_each(?) AS c WHERE m.meter_id IS NOT NULL)"
            " AND kind = ? ORDER BY meter_id, channel",
            [_ALL_CHANNELS, Kind.CUMULATIVE.value],
        )
        return [LastValue(r[0], CHANNEL[r[1]], rows.dt(r[2]), r[3]) for r in found]

    # -- wave 2 -------------------------------------------------------------------
    async def feed(self, *, after: int, limit: int = 1000) -> FeedPage:
        """Readings with seq > after in seq order. SQLite has one writer at a time and
        seq is taken inside its write transaction, so commit order is seq order: every
        committed seq is final and the feed can never skip one."""
        found = await self._fetch(
            "feed", f"SELECT {rows.READING_COLS} FROM readings WHERE seq > ? ORDER BY seq LIMIT ?", [after, limit]
        )
        items = await converted(found, rows.reading)
        return FeedPage(items, items[-1].seq if items and items[-1].seq is not None else after)

    async def _probe(self, meter_id: str, channel: Channel, times: list[datetime], *,
                     flagged_until: datetime | None) -> boundary.Probes:  # fmt: skip
        micros = [rows.us(t) for t in times]
        found = await self._fetch(
            f"consumption of {meter_id}",
            _PROBES + (_FLAGGED if flagged_until is not None else "") + _ORDER,
            {"times": json.dumps(micros), "m": meter_id, "ch": channel.value, "lo": micros[0], "hi": micros[-1],
             "w": self.estimate_window // timedelta(microseconds=1),
             **({"until": rows.us(flagged_until)} if flagged_until is not None else {})},
        )  # fmt: skip
        last: list[Reading | None] = []
        real: dict[int, Reading] = {}
        flagged: list[Reading] = []
        first_after = None
        for row in found:
            if row[0] == 0:
                last.append(None if row[2] is None else rows.reading(row[2:2 + _NCOLS]))
                if row[2 + _NCOLS] is not None:
                    real[row[1]] = rows.reading(row[2 + _NCOLS:])
            elif row[0] == 1:
                flagged.append(rows.reading(row[2:2 + _NCOLS]))
            else:
                first_after = rows.reading(row[2:2 + _NCOLS])
        return boundary.Probes(last, real, first_after if last[0] is None else None, flagged)


