"""A reading's audit trail (issue 24 item 7) on real data: a person's corrected value through the API (with a
note and the key that sent it), verdicts and estimates, each an entry of
GET /v1/meters/{id}/readings/{channel}/{ts}/history with who, when, the rule or method and the value before;
the original value is never lost; the feed shows each change once; a bad edit is a 422 naming the field and
stores nothing."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.model import Batch, Channel, Kind, Reading
from gateway.validate.validator import Validator
from storage.base import Store
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


def _trail_path(meter_id: str, channel: str, ts: str) -> str:
    return f"/v1/meters/{meter_id}/readings/{channel}/{ts.replace('+', '%2B')}/history"


def _without_at(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "at"} for h in items]


async def test_an_edit_keeps_the_original_in_the_trail_and_is_fed_once(api: httpx.AsyncClient, keys: Keys) -> None:
    [suspect, *_] = await all_pages(api, "/v1/meters/M-0004/readings", status="suspect", **WIDE)
    key = {"meter_id": "M-0004", "channel": suspect["channel"], "ts": suspect["ts"]}
    cursor = await _feed_end(api)
    write = keys.header("write")
    corrected = round(suspect["value"] + 1.5, 3)

    edited = await ok(api.post("/v1/readings/edit", json={**key, "value": corrected, "note": "photo of the register"},
                               headers=write))
    again = await ok(api.post("/v1/readings/edit", json={**key, "value": corrected, "note": "sent twice"},
                              headers=write))
    assert (edited["value"], edited["status"], edited["quality"]) == (corrected, "verified", suspect["quality"])
    assert edited["seq"] > suspect["seq"] and again == edited
    news = (await ok(api.get("/v1/readings/feed", params={"after": cursor})))["items"]
    assert [(r["ts"], r["value"], r["seq"]) for r in news] == [(suspect["ts"], corrected, edited["seq"])]

    await ok(api.post("/v1/readings/verify", json={**key, "status": "rejected", "note": "meter swapped"},
                      headers=keys.header("admin")))
    path = _trail_path("M-0004", suspect["channel"], suspect["ts"])
    trail = await all_pages(api, path, limit=1)  # one entry a page: the cursor walks the whole trail
    assert _without_at(trail) == [
        {"action": "recorded", "from_status": None, "to_status": "suspect", "previous_value": None,
         "value": suspect["value"], "method": None, "rule": ",".join(suspect["quality"]), "note": None,
         "by": {"key_id": None, "name": suspect["source"]}},
        {"action": "edit", "from_status": "suspect", "to_status": "verified", "previous_value": suspect["value"],
         "value": corrected, "method": None, "rule": ",".join(suspect["quality"]), "note": "photo of the register",
         "by": {"key_id": key_id_of(keys.write), "name": "test-write"}},
        {"action": "verdict", "from_status": "verified", "to_status": "rejected", "previous_value": None,
         "value": None, "method": None, "rule": None, "note": "meter swapped",
         "by": {"key_id": key_id_of(keys.admin), "name": "test-admin"}}]
    assert trail[0]["at"] == suspect["received_at"]
    assert trail[0]["at"] <= trail[1]["at"] <= trail[2]["at"]
    assert await all_pages(api, path) == trail


async def test_a_bad_edit_is_a_422_naming_the_field_and_stores_nothing(api: httpx.AsyncClient, keys: Keys) -> None:
    [reading, *_] = await all_pages(api, "/v1/meters/M-0001/readings", channel="energy_import", **WIDE)
    key = {"meter_id": "M-0001", "channel": "energy_import", "ts": reading["ts"]}
    cursor = await _feed_end(api)
    write = keys.header("write")
    edit = "/v1/readings/edit"

    body = await fails(api.post(edit, json={**key, "ts": "2001-01-01T00:00:00Z", "value": 1.0, "note": "n"},
                                headers=write), 422, "invalid_request", "body.ts", "no energy_import reading",
                       "nothing stored")
    assert body["where"] == "body.ts"
    body = await fails(api.post(edit, json={**key, "meter_id": "M-9999", "value": 1.0, "note": "n"}, headers=write),
                       422, "invalid_request", "body.meter_id", "M-9999")
    assert body["where"] == "body.meter_id"
    for value in ("lots", None):
        await fails(api.post(edit, json={**key, "value": value, "note": "n"}, headers=write), 422, "invalid_request",
                    "body.value")
    nan = json.dumps({**key, "value": math.nan, "note": "n"})  # Python writes NaN, which JSON has not
    assert "NaN" in nan
    await fails(api.post(edit, content=nan, headers={**write, "Content-Type": "application/json"}), 422,
                "invalid_request", "body.value")
    await fails(api.post(edit, json={**key, "value": 1.0}, headers=write), 422, "invalid_request", "body.note")
    await fails(api.post(edit, json={**key, "value": 1.0, "note": "n"}, headers=keys.header("read")), 403,
                "forbidden")

    # Nothing stored: the reading, its trail and the feed are as before.
    assert (await ok(api.get("/v1/readings/feed", params={"after": cursor})))["items"] == []
    [again, *_] = await all_pages(api, "/v1/meters/M-0001/readings", channel="energy_import", **WIDE)
    assert again == reading
    trail = await all_pages(api, _trail_path("M-0001", "energy_import", reading["ts"]))
    assert [h["action"] for h in trail] == ["recorded"]
    await fails(api.get(_trail_path("M-0001", "energy_import", "2001-01-01T00:00:00Z")), 404, "not_found",
                "M-0001/energy_import@2001-01-01T00:00:00+00:00")
    await fails(api.get(_trail_path("M-0001", "nonsense", reading["ts"])), 422, "invalid_request", "path.channel")
    await fails(api.get(_trail_path("M-0001", "energy_import", "yesterday")), 422, "invalid_request", "path.ts")


async def test_an_estimate_is_in_the_trail_with_its_method_and_reads_and_stays_when_replaced(
        api: httpx.AsyncClient, store: Store) -> None:  # fmt: skip
    # The validator fills a 45-minute gap of M-0001 (long before the simulated data) and the store keeps it.
    t0 = datetime(2020, 6, 1, tzinfo=UTC)
    step = timedelta(minutes=15)

    def read(k: int, value: float) -> Reading:
        return Reading("M-0001", Channel.ENERGY_IMPORT, t0 + k * step, value, Kind.CUMULATIVE,
                       received_at=t0 + k * step + timedelta(seconds=2))

    validator = Validator(intervals={"M-0001": 900})
    out = [r for batch in ([read(0, 100.0)], [read(3, 100.9)]) for r in validator.validate(batch)[0]]
    await store.write(Batch(readings=out))
    ts = (t0 + step).isoformat().replace("+00:00", "Z")
    rule = "estimate=linear from=2020-06-01T00:00:00Z,2020-06-01T00:45:00Z linear_hours=3"

    trail = await all_pages(api, _trail_path("M-0001", "energy_import", ts))
    assert _without_at(trail) == [
        {"action": "recorded", "from_status": None, "to_status": "estimated", "previous_value": None,
         "value": 100.3, "method": "linear", "rule": rule, "note": None, "by": {"key_id": None, "name": "estimate"}}]

    await store.write(Batch(readings=[read(1, 100.25)]))  # the real read arrives late
    trail = await all_pages(api, _trail_path("M-0001", "energy_import", ts))
    assert _without_at(trail) == [
        {"action": "recorded", "from_status": None, "to_status": "estimated", "previous_value": None,
         "value": 100.3, "method": "linear", "rule": rule, "note": None, "by": {"key_id": None, "name": "estimate"}},
        {"action": "estimate_replaced", "from_status": "estimated", "to_status": "valid", "previous_value": 100.3,
         "value": 100.25, "method": "linear", "rule": rule, "note": None, "by": {"key_id": None, "name": "modbus"}}]
    assert trail[0]["at"] == (t0 + 3 * step + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    assert not math.isnan(trail[1]["value"])
