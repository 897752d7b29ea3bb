"""A consumer's Green Button (NAESB ESPI) feed over HTTP on real simulator data, in both stores:
valid against the ESPI usage.xsd + atom.xsd (../shared/fixtures/espi), function block 1's structure
(unique ids, self/up/related links), and read back by an independent parser (greenbutton-objects,
Apache-2.0) to the values of the consumption API."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import xmlschema
from greenbutton_objects import parse as gb_parse

from tests.api.helpers import fails, ok
from tests.fixtures.shared import shared_fixture

ATOM = "{http://www.w3.org/2005/Atom}"
ESPI = "{http://naesb.org/espi}"
NOW = datetime.now(UTC)
WINDOW = {"from": (NOW - timedelta(days=2)).isoformat(), "to": (NOW + timedelta(hours=1)).isoformat()}


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(shared_fixture("espi", "schemas", "v3.3", "usage.xsd")))


async def get_feed(api: httpx.AsyncClient, consumer: str = "C-1", **params: Any) -> bytes:
    resp = await api.get(f"/v1/consumers/{consumer}/green-button", params={**WINDOW, **params})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/atom+xml")
    return resp.content


async def test_the_feed_validates_against_the_espi_schemas(api: httpx.AsyncClient, schema: xmlschema.XMLSchema,
                                                           tmp_path: Path) -> None:
    body = await get_feed(api, tz="America/New_York")
    schema.validate(body.decode())  # usage.xsd imports atom.xsd: the envelope and each ESPI resource (strict)
    root = ET.fromstring(body)
    assert len(root.findall(f"{ATOM}entry/{ATOM}content/{ESPI}IntervalBlock")) >= 1
    ltp = root.find(f"{ATOM}entry/{ATOM}content/{ESPI}LocalTimeParameters")
    assert ltp is not None and ltp.findtext(f"{ESPI}tzOffset") == "-18000" and ltp.findtext(f"{ESPI}dstOffset") == "3600"
    assert ltp.findtext(f"{ESPI}dstStartRule") == "360E2000"


async def test_function_block_1_structure(api: httpx.AsyncClient) -> None:
    root = ET.fromstring(await get_feed(api))
    assert root.findtext(f"{ATOM}id") and root.findtext(f"{ATOM}title") and root.findtext(f"{ATOM}updated")
    entries = root.findall(f"{ATOM}entry")
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    assert len(ids) == len(set(ids)) and all(i and i.startswith("urn:uuid:") for i in ids)

    def links(e: ET.Element, rel: str) -> list[str]:
        return [link.get("href", "") for link in e.iterfind(f"{ATOM}link") if link.get("rel") == rel]

    kinds = {e: next(iter(e.find(f"{ATOM}content") or [])).tag.removeprefix(ESPI) for e in entries}
    by_self = {links(e, "self")[0]: e for e in entries}
    assert all(len(links(e, "self")) == 1 and len(links(e, "up")) == 1 for e in entries)
    points = [e for e in entries if kinds[e] == "UsagePoint"]
    assert len(points) == 1
    (related,) = [h for h in links(points[0], "related") if h.endswith("/MeterReading")]
    readings = [e for e in entries if kinds[e] == "MeterReading" and links(e, "up")[0] == related]
    assert len(readings) == 1
    rel = links(readings[0], "related")
    assert any(kinds[by_self[h]] == "ReadingType" for h in rel if h in by_self)
    blocks = [e for e in entries if kinds[e] == "IntervalBlock" and links(e, "up")[0] in rel]
    assert blocks


async def test_an_independent_parser_reads_back_the_consumption_api_values(api: httpx.AsyncClient,
                                                                           tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(await get_feed(api))
    (point,) = gb_parse.parse_feed(str(path))
    assert point.title == "M-0001" and point.serviceCategory.value == 0
    (reading,) = point.meterReadings
    assert reading.readingType.uom.value == 72 and reading.readingType.intervalLength == 3600
    got = sorted((int(r.timePeriod.start.timestamp()), Decimal(str(r.value))) for r in reading.intervalReadings)
    root = ET.fromstring(path.read_bytes())
    power = int(root.findtext(f"{ATOM}entry/{ATOM}content/{ESPI}ReadingType/{ESPI}powerOfTenMultiplier") or 0)
    ours = sorted((int(r.findtext(f"{ESPI}timePeriod/{ESPI}start") or 0),
                   Decimal(r.findtext(f"{ESPI}value") or 0).scaleb(power)) for r in root.iter(f"{ESPI}IntervalReading"))
    assert got == ours and len(got) >= 1
    body = await ok(api.get("/v1/meters/M-0001/consumption", params={
        "channel": "energy_import", "bucket": "day", "from": WINDOW["from"], "to": NOW.isoformat()}))
    total = sum(Decimal(repr(b["value"])) for b in body["buckets"] if b["value"] is not None) * 1000
    assert sum(v for _, v in got) == total > 0
    assert {q.quality.value for r in reading.intervalReadings for q in r.readingQualities} <= {17, 8, 9, 10}


async def test_a_consumer_gets_only_its_share_of_a_meter(api: httpx.AsyncClient) -> None:
    """C-NEW moves in on M-0002 between two of its reads: C-2's feed ends there and C-NEW's starts
    there, and the two add up to the meter's consumption over both."""
    rows = (await ok(api.get("/v1/meters/M-0002/readings", params={"channel": "energy_import", **WINDOW,
                                                                    "limit": 1000})))["items"]
    middle = datetime.fromisoformat(rows[len(rows) // 2]["ts"])
    move = middle.replace(microsecond=0) + timedelta(seconds=1)
    await ok(api.post("/v1/meters/M-0002/assignments", json={"consumer_number": "C-NEW", "start": move.isoformat()}),
             201)

    def periods(root: ET.Element) -> list[tuple[int, int, int]]:
        return [(int(r.findtext(f"{ESPI}timePeriod/{ESPI}start") or 0),
                 int(r.findtext(f"{ESPI}timePeriod/{ESPI}duration") or 0), int(r.findtext(f"{ESPI}value") or 0))
                for r in root.iter(f"{ESPI}IntervalReading")]

    old = periods(ET.fromstring(await get_feed(api, "C-2")))
    new = periods(ET.fromstring(await get_feed(api, "C-NEW")))
    assert old and new
    assert max(s + d for s, d, _ in old) == int(move.timestamp()) == min(s for s, _, _ in new)
    whole = await ok(api.get("/v1/meters/M-0002/consumption", params={
        "channel": "energy_import", "bucket": "day", "from": WINDOW["from"], "to": NOW.isoformat()}))
    total = sum(Decimal(repr(b["value"])) for b in whole["buckets"] if b["value"] is not None) * 1000
    assert sum(v for *_, v in old) + sum(v for *_, v in new) == total


async def test_bad_requests_say_what(api: httpx.AsyncClient) -> None:
    await fails(api.get("/v1/consumers/C-NOPE/green-button"), 404, "not_found", "C-NOPE")
    await fails(api.get("/v1/consumers/C-1/green-button", params={"tz": "Mars/Olympus"}), 400, "invalid_request",
                "Mars/Olympus")
    await fails(api.get("/v1/consumers/C-1/green-button", params={"from": "2024-01-01T00:00:00Z",
                                                                  "to": "2026-01-01T00:00:00Z"}),
                400, "invalid_request", "longer than 366 days")
    await fails(api.get("/v1/consumers/C-1/green-button", params={"from": "2150-01-01T00:00:00Z",
                                                                  "to": "2150-01-02T00:00:00Z"}),
                400, "invalid_request", "future")
