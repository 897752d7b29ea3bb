"""Readings, latest per channel, the change feed, verification and consumption over HTTP,
on real simulator data."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from gateway.model import Batch, Channel, Kind, Reading
from storage.base import Store
from tests.api.helpers import WIDE, all_pages, as_reading, fails, ok


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def _feed(api: httpx.AsyncClient, after: str | None = None, limit: int = 50) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    for _ in range(10_000):
        body = await ok(api.get("/v1/readings/feed", params={"limit": limit, **({"after": after} if after else {})}))
        items += body["items"]
        after = body["next_cursor"]
        if not body["more"]:
            assert after is not None
            return items, after
    raise AssertionError("the feed did not end")


async def test_readings_pages_cover_the_range_once_in_order(api: httpx.AsyncClient) -> None:
    rows = await all_pages(api, "/v1/meters/M-0001/readings", limit=7, **WIDE)
    keys = [(ts(r["ts"]), r["channel"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) > 50
    one = await all_pages(api, "/v1/meters/M-0001/readings", channel="energy_import", limit=5, **WIDE)
    assert [r for r in rows if r["channel"] == "energy_import"] == one
    assert {r["unit"] for r in one} == {"kWh"} and {r["kind"] for r in one} == {"cumulative"}
    cut = ts(one[3]["ts"])
    part = await ok(api.get("/v1/meters/M-0001/readings", params={
        "channel": "energy_import", "from": one[1]["ts"], "to": cut.isoformat()}))
    assert part["items"] == one[1:3]  # [from, to)
    suspect = await all_pages(api, "/v1/meters/M-0004/readings", status="suspect", **WIDE)
    assert suspect and all(r["status"] == "suspect" and "regression" in r["quality"] for r in suspect)


async def test_readings_errors_say_what_is_wrong(api: httpx.AsyncClient) -> None:
    await fails(api.get("/v1/meters/NOPE/readings"), 404, "not_found", "NOPE")
    await fails(api.get("/v1/meters/M-0001/readings", params={"from": "2026-01-01T00:00:00"}), 400,
                "invalid_request", "from=2026-01-01T00:00:00 has no time zone")
    await fails(api.get("/v1/meters/M-0001/readings", params={"from": "2026-02-01T00:00:00Z",
                                                              "to": "2026-01-01T00:00:00Z"}),
                400, "invalid_request", "must be before")
    await fails(api.get("/v1/meters/M-0001/readings", params={"from": "0001-01-01T00:00:00Z"}), 400,
                "invalid_request", "outside the years")
    await fails(api.get("/v1/meters/M-0001/readings", params={"channel": "torque"}), 422, "invalid_request",
                "query.channel")
    await fails(api.get("/v1/meters/M-0001/readings", params={"cursor": "WzEsMiwzXQ"}), 400, "invalid_request",
                "cursor")
    await fails(api.get("/v1/meters/M%00/readings"), 400, "invalid_request", "path parameter 'meter_id'")


async def test_latest_is_the_newest_reading_of_each_channel(api: httpx.AsyncClient) -> None:
    latest = await ok(api.get("/v1/meters/M-0002/readings/latest"))
    rows = await all_pages(api, "/v1/meters/M-0002/readings", limit=1000, **WIDE)
    newest: dict[str, dict[str, Any]] = {}
    for r in rows:
        newest[r["channel"]] = r
    # A page like every other list; one page always (a meter has a few dozen channels at most).
    assert latest == {"items": [newest[c] for c in sorted(newest)], "next_cursor": None}
    assert len(latest["items"]) >= 5
    # The bare array of before, for one more release.
    assert await ok(api.get("/v1/meters/M-0002/readings/latest", params={"shape": "array"})) == latest["items"]
    await fails(api.get("/v1/meters/M-0002/readings/latest", params={"shape": "list"}), 422, "invalid_request",
                "query.shape")
    await fails(api.get("/v1/meters/NOPE/readings/latest"), 404, "not_found")


async def test_feed_gives_every_reading_once_in_ingest_order(api: httpx.AsyncClient) -> None:
    items, cursor = await _feed(api)

    seqs = [r["seq"] for r in items]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    stored = [r for m in ("M-0001", "M-0002", "M-0003", "M-0004")
              for r in await all_pages(api, f"/v1/meters/{m}/readings", limit=5000, **WIDE)]
    assert sorted(r["seq"] for r in stored) == seqs
    again = await ok(api.get("/v1/readings/feed", params={"after": cursor}))
    assert again == {"items": [], "next_cursor": cursor, "more": False}
    await fails(api.get("/v1/readings/feed", params={"after": "WyJ4Il0"}), 400, "invalid_request", "cursor")
    await fails(api.get("/v1/readings/feed", params={"limit": 0}), 422, "invalid_request", "query.limit")


async def test_verification_is_logged_and_shows_again_in_the_feed(api: httpx.AsyncClient) -> None:
    _, cursor = await _feed(api, limit=1000)
    suspect = (await ok(api.get("/v1/meters/M-0004/readings", params={**WIDE, "status": "suspect"})))["items"][0]
    verdict = {"meter_id": "M-0004", "channel": "energy_import", "ts": suspect["ts"], "status": "verified",
               "note": "register photographed on site"}

    got = await ok(api.post("/v1/readings/verify", json=verdict))

    assert (got["status"], got["value"], got["ts"]) == ("verified", suspect["value"], suspect["ts"])
    assert got["seq"] > suspect["seq"]
    news, _ = await _feed(api, after=cursor)
    assert [(r["meter_id"], r["ts"], r["status"]) for r in news] == [("M-0004", suspect["ts"], "verified")]
    await fails(api.post("/v1/readings/verify", json={**verdict, "ts": "2001-01-01T00:00:00Z"}), 404, "not_found",
                "reading")
    await fails(api.post("/v1/readings/verify", json={**verdict, "status": "estimated"}), 422, "invalid_request",
                "body.status")
    await fails(api.post("/v1/readings/verify", json={**verdict, "note": ""}), 422, "invalid_request", "body.note")


async def test_consumption_buckets_add_up_to_the_billing_read(api: httpx.AsyncClient, store: Store) -> None:
    live = await all_pages(api, "/v1/meters/M-0001/readings", channel="energy_import", limit=5000, **WIDE)
    # The simulators ran for seconds: older reads of the same register spread it over days.
    first, v0 = ts(live[0]["ts"]), live[0]["value"]
    older = [Reading("M-0001", Channel.ENERGY_IMPORT, first - timedelta(hours=h), v0 - h / 10, Kind.CUMULATIVE)
             for h in (50, 26, 25, 2)]
    await store.write(Batch(readings=older))
    reads = await all_pages(api, "/v1/meters/M-0001/readings", channel="energy_import", limit=5000, **WIDE)
    first, last = ts(reads[0]["ts"]), ts(reads[-1]["ts"])
    params = {"from": first.isoformat(), "to": (last + timedelta(hours=2)).isoformat()}

    hourly = await ok(api.get("/v1/meters/M-0001/consumption", params={**params, "bucket": "hour"}))
    daily = await ok(api.get("/v1/meters/M-0001/consumption", params={**params, "bucket": "day",
                                                                        "tz": "Africa/Nairobi"}))
    bill = await ok(api.get("/v1/consumers/C-1/billing", params={"from": first.isoformat(),
                                                                 "to": params["to"]}))

    assert (hourly["channel"], hourly["unit"], hourly["bucket"]) == ("energy_import", "kWh", "hour")
    total = reads[-1]["value"] - reads[0]["value"]
    # The first bucket has no read at or before its start: the first read after it opens it (issue 27 item 6;
    # it had no value before), and the buckets add up.
    assert hourly["buckets"][0]["opening_after_start"] and hourly["buckets"][0]["first_read"] == reads[0]
    assert abs(sum(b["value"] or 0 for b in hourly["buckets"]) - total) < 1e-6
    assert abs(sum(b["value"] or 0 for b in daily["buckets"]) - total) < 1e-6
    assert hourly["buckets"][-1]["last_read"] == reads[-1]
    assert len(hourly["buckets"]) >= 50 and all(not b["estimated"] for b in hourly["buckets"])
    # The bill starts where C-1's assignment does (the gateway registered the meter then).
    [assignment] = (await ok(api.get("/v1/meters/M-0001/assignments")))["items"]
    [part] = bill["meters"]
    opening = [r for r in reads if ts(r["ts"]) <= ts(assignment["start"])][-1]
    assert part["start"] == assignment["start"] and as_reading(part["opening"]) == opening
    assert as_reading(part["closing"]) == reads[-1]
    assert abs(part["consumption"] - (reads[-1]["value"] - opening["value"])) < 1e-6 and not bill["suspect"]
    await fails(api.get("/v1/meters/M-0001/consumption", params={"channel": "power"}), 400, "invalid_request",
                "not a cumulative register")
    await fails(api.get("/v1/meters/M-0001/consumption", params={"tz": "Mars/Olympus"}), 400, "invalid_request",
                "unknown time zone")
    await fails(api.get("/v1/meters/M-0001/consumption", params={"bucket": "week"}), 422, "invalid_request")
    await fails(api.get("/v1/meters/M-0001/consumption", params={"bucket": "hour", "from": "2000-01-01T00:00:00Z",
                                                                 "to": "2026-01-01T00:00:00Z"}),
                400, "invalid_request", "more than")


async def test_consumption_of_a_regressing_meter_is_suspect(api: httpx.AsyncClient) -> None:
    body = await ok(api.get("/v1/meters/M-0004/consumption", params={**WIDE, "bucket": "month"}))
    assert any(b["suspect"] for b in body["buckets"])
