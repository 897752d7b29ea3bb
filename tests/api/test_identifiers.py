"""Identifiers through the API (issue 22 item 6): one rule for meter ids, consumer numbers and
device numbers in bodies, path parameters and the CSV import; tags bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.model.identifiers import MAX_TAGS, PATTERN
from tests.api.helpers import fails, ok
from tests.browser.diag_setup import make_key, running
from tests.fixtures.gateway import gateway_config

NEW = {"meter_id": "W-0300", "utility": "water", "protocol": "mqtt", "address": "meters/W-0300"}

#: (value, words the message must hold): each breaks the rule in one way.
BAD = [
    ("../../etc/passwd", "'/'"),
    ("M/1", "'/'"),
    ("M..1", "'..'"),
    ("M+1", "wildcard '+'"),
    ("M#1", "wildcard '#'"),
    ("M*1", "wildcard '*'"),
    ("M?1", "wildcard '?'"),
    ("M%2F1", "'%'"),
    ("M 1", "a space"),
    ("M\t1", "U+0009"),
    ("M\x001", "U+0000"),
    ("Мeter-1", "'М'"),  # a Cyrillic capital Em, not M
    (".hidden", "starts with '.'"),
    ("-rf", "starts with '-'"),
    ("", "is empty"),
    ("M" * 65, "65 characters long, more than 64"),
]
#: Ids the tests, simulators and example configs use: they stay valid.
GOOD = ["M-5678", "P-00003", "C-1007", "SN-0001", "SDM630-2211-0457", "edge.1:7", "gw_2.m-3", "1", "M-1."]


def problems(body: dict[str, Any]) -> list[str]:
    found: list[str] = body["problems"]
    return found


@pytest.mark.parametrize("field", ["meter_id", "device_number", "consumer_number"])
async def test_create_refuses_each_kind_of_bad_identifier_saying_what_is_wrong(
        api: httpx.AsyncClient, field: str) -> None:  # fmt: skip
    for value, words in BAD:
        body = await fails(api.post("/v1/meters", json={**NEW, field: value}), 422, "invalid_request",
                           f"body.{field}", words)
        assert "an identifier is 1-64 characters of A-Z a-z 0-9 . _ : -" in body["message"], body
    await fails(api.get("/v1/meters/W-0300"), 404, "not_found")


async def test_the_meter_the_issue_created_is_refused_and_valid_ids_are_kept(api: httpx.AsyncClient) -> None:
    body = await fails(api.post("/v1/meters", json={**NEW, "meter_id": "../../etc/passwd"}), 422, "invalid_request")
    assert problems(body) == ["body.meter_id: contains '/' (a path and topic separator); an identifier is 1-64 "
                              "characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit, no '..'"]
    found = await ok(api.get("/v1/meters", params={"search": "passwd"}))
    assert found["items"] == []

    # Ids of the kinds the tests, simulators and examples use stay valid, everywhere.
    for i, value in enumerate(GOOD):
        meter = {**NEW, "meter_id": value, "device_number": value, "consumer_number": f"{value}-c{i}"}
        created = await ok(api.post("/v1/meters", json=meter), 201)
        assert (created["meter_id"], created["device_number"]) == (value, value)
        assert (await ok(api.get(f"/v1/meters/{value}")))["consumer_number"] == f"{value}-c{i}"
        await ok(api.get(f"/v1/consumers/{value}-c{i}"))


async def test_update_and_move_in_follow_the_same_rule(api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/meters", json=NEW), 201)
    await fails(api.patch("/v1/meters/W-0300", json={"device_number": "WM/1"}), 422, "invalid_request",
                "body.device_number", "'/'")
    await fails(api.post("/v1/meters/W-0300/assignments", json={"consumer_number": "C..1",
                                                                "start": "2026-01-01T00:00:00Z"}),
                422, "invalid_request", "body.consumer_number", "'..'")
    assert (await ok(api.get("/v1/meters/W-0300")))["device_number"] is None


async def test_tags_are_bounded_in_number_length_and_characters(api: httpx.AsyncClient) -> None:
    await fails(api.post("/v1/meters", json={**NEW, "tags": {"feeder": "x" * 10_000}}), 422, "invalid_request",
                "body.tags.feeder", "the tag value is 10000 characters long, more than 256")
    await fails(api.post("/v1/meters", json={**NEW, "tags": {"note": "line\nbreak"}}), 422, "invalid_request",
                "body.tags.note", "U+000A")
    await fails(api.post("/v1/meters", json={**NEW, "tags": {"a b": "x"}}), 422, "invalid_request",
                "body.tags", "a space")
    many = {f"t{i}": "x" for i in range(MAX_TAGS + 1)}
    await fails(api.post("/v1/meters", json={**NEW, "tags": many}), 422, "invalid_request", "body.tags",
                f"at most {MAX_TAGS} items")
    fine = {**{f"t{i}": "x" for i in range(MAX_TAGS - 1)}, "feeder": "F7 / north, ring 2 (ünd mehr)" + "x" * 200}
    created = await ok(api.post("/v1/meters", json={**NEW, "tags": fine}), 201)
    assert created["tags"] == fine
    await fails(api.patch("/v1/meters/W-0300", json={"tags": {"feeder": "y" * 257}}), 422, "invalid_request",
                "body.tags.feeder", "257 characters long")


@pytest.mark.parametrize(("path", "where", "words"), [
    ("/v1/meters/M..1", "path.meter_id", "'..'"),
    ("/v1/meters/M%2A1/readings/latest", "path.meter_id", "wildcard '*'"),
    ("/v1/meters/M+1/balance", "path.meter_id", "wildcard '+'"),
    ("/v1/meters/M%201/assignments", "path.meter_id", "a space"),
    ("/v1/meters/" + "M" * 65, "path.meter_id", "65 characters long"),
    ("/v1/meters/.x/readings", "path.meter_id", "starts with '.'"),
    ("/v1/consumers/C%3F1", "path.consumer_number", "wildcard '?'"),
    ("/v1/consumers/C%251/billing", "path.consumer_number", "'%'"),
])
async def test_a_path_parameter_that_breaks_the_rule_is_answered_422_saying_why(
        api: httpx.AsyncClient, path: str, where: str, words: str) -> None:  # fmt: skip
    await fails(api.get(path), 422, "invalid_request", where, words)


CSV_HEADER = "meter_id,utility,protocol,device_number,consumer_number,tags\n"


async def test_csv_import_reports_each_row_that_breaks_the_rule(api: httpx.AsyncClient) -> None:
    rows = ["W-0401,water,mqtt,WM-1,C-401,zone=north",
            "../../etc/passwd,water,mqtt,,,",
            "W-0403,water,mqtt,WM/3,,",
            "W-0404,water,mqtt,,C..404,",
            "W-0405,water,mqtt,,,feeder=" + "x" * 300,
            "W 0406,water,mqtt,,,"]
    report = await ok(api.post("/v1/meters/import", content=CSV_HEADER + "\n".join(rows) + "\n",
                               headers={"content-type": "text/csv"}), 422)

    assert (report["imported"], report["failed"], report["applied"]) == (0, 5, False)
    errors = {r["row"]: r["error"] for r in report["rows"] if not r["ok"]}
    assert sorted(errors) == [3, 4, 5, 6, 7]
    assert errors[3].startswith("meter_id: contains '/'")
    assert errors[4].startswith("device_number: contains '/'")
    assert errors[5].startswith("consumer_number: contains '..'")
    assert errors[6].startswith("tags.feeder: the tag value is 300 characters long, more than 256")
    assert errors[7].startswith("meter_id: contains a space")

    partial = await ok(api.post("/v1/meters/import", params={"partial": "true"},
                                content=CSV_HEADER + "\n".join(rows) + "\n", headers={"content-type": "text/csv"}),
                       201)
    assert partial["imported"] == 1
    assert [m["meter_id"] for m in (await ok(api.get("/v1/meters", params={"search": "W-04"})))["items"]] == [
        "W-0401"]


async def test_the_rule_is_published_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    doc = await ok(api.get("/openapi.json"))
    meter_in = doc["components"]["schemas"]["MeterIn"]["properties"]
    assert meter_in["meter_id"]["pattern"] == PATTERN and meter_in["meter_id"]["maxLength"] == 64
    [param] = [p for p in doc["paths"]["/v1/meters/{meter_id}"]["get"]["parameters"] if p["name"] == "meter_id"]
    assert param["schema"]["pattern"] == PATTERN


async def test_diagnostics_meter_paths_follow_the_rule_too(tmp_path: Path) -> None:
    async with running(gateway_config(tmp_path / "gw")) as (gw, api):
        auth = await make_key(gw)
        await fails(api.get("/v1/diag/meters/M..1", headers=auth), 422, "invalid_request", "path.meter_id", "'..'")
        await fails(api.get("/v1/diag/meters/M%2A1/payloads", headers=auth), 422, "invalid_request",
                    "path.meter_id", "wildcard '*'")
        await fails(api.post("/v1/diag/meters/M%201/poll", headers=auth), 422, "invalid_request",
                    "path.meter_id", "a space")
        await fails(api.get("/v1/diag/meters/M-0009", headers=auth), 404, "not_found", "M-0009")
