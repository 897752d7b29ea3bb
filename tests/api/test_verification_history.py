"""Verification (issue 27 item 9): a verdict the reading already has changes nothing (no new seq, so no
feed reader gets it again), and each verdict's note, key and time are readable on the reading's history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from storage.keys import key_id_of
from tests.api.conftest import Keys
from tests.api.helpers import WIDE, all_pages, fails, ok


async def _feed_end(api: httpx.AsyncClient) -> str:
    after = None
    while True:
        body = await ok(api.get("/v1/readings/feed", params={"limit": 10_000, **({"after": after} if after else {})}))
        after = body["next_cursor"]
        if not body["more"]:
            return str(after)


async def test_a_repeated_verdict_changes_nothing_and_the_history_says_who_why_and_when(
        api: httpx.AsyncClient, keys: Keys) -> None:  # fmt: skip
    [suspect, *_] = await all_pages(api, "/v1/meters/M-0004/readings", status="suspect", **WIDE)
    key = {"meter_id": "M-0004", "channel": suspect["channel"], "ts": suspect["ts"]}
    cursor = await _feed_end(api)
    before = datetime.now(UTC)
    write = keys.header("write")

    first = await ok(api.post("/v1/readings/verify", json={**key, "status": "verified", "note": "checked on site"},
                              headers=write))
    again = await ok(api.post("/v1/readings/verify", json={**key, "status": "verified", "note": "checked twice"},
                              headers=write))

    assert first["status"] == "verified" and first["seq"] > suspect["seq"]
    assert again == first  # the same seq: nothing changed
    news = (await ok(api.get("/v1/readings/feed", params={"after": cursor})))["items"]
    assert [(r["ts"], r["seq"]) for r in news] == [(suspect["ts"], first["seq"])]  # sent to readers once

    rejected = await ok(api.post("/v1/readings/verify", json={**key, "status": "rejected", "note": "meter swapped"},
                                 headers=keys.header("admin")))
    assert rejected["seq"] > first["seq"]
    history = await all_pages(api, "/v1/meters/M-0004/readings/history", limit=1, channel=key["channel"],
                              ts=key["ts"])
    after = datetime.now(UTC)
    assert [{k: v for k, v in h.items() if k != "at"} for h in history] == [
        {"from_status": "suspect", "to_status": "verified", "note": "checked on site",
         "by": {"key_id": key_id_of(keys.write), "name": "test-write"}},
        {"from_status": "verified", "to_status": "rejected", "note": "meter swapped",
         "by": {"key_id": key_id_of(keys.admin), "name": "test-admin"}}]
    assert before <= datetime.fromisoformat(history[0]["at"]) <= datetime.fromisoformat(history[1]["at"]) <= after


async def test_a_reading_without_verdicts_has_an_empty_history_and_a_missing_one_is_404(
        api: httpx.AsyncClient) -> None:  # fmt: skip
    [reading, *_] = await all_pages(api, "/v1/meters/M-0001/readings", channel="energy_import", **WIDE)
    params: dict[str, Any] = {"channel": "energy_import", "ts": reading["ts"]}

    assert await ok(api.get("/v1/meters/M-0001/readings/history", params=params)) == {"items": [],
                                                                                       "next_cursor": None}
    await fails(api.get("/v1/meters/M-0001/readings/history", params={**params, "ts": "2001-01-01T00:00:00Z"}), 404,
                "not_found", "reading", "M-0001/energy_import@2001-01-01T00:00:00+00:00")
    await fails(api.get("/v1/meters/M-0001/readings/history", params={"channel": "energy_import"}), 422,
                "invalid_request", "query.ts")
