"""IEC 61968-9 MeterReadings and EndDeviceEvents replies over HTTP, on real simulator data in both
stores: element by element against the notes (namespaces, verb, noun, codes), values as the JSON API
gives them, pages that add up to the whole, and FAILED replies for bad requests."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.cim.documents import text
from api.cim.tables import TableError, load_tables
from api.pagination import encode_cursor
from storage.base import Store
from tests.api.conftest import Keys
from tests.api.helpers import WIDE, all_pages, ok

MSG = "{http://iec.ch/TC57/2011/schema/message}"
MR = "{http://iec.ch/TC57/2011/MeterReadings#}"
EV = "{http://iec.ch/TC57/2011/EndDeviceEvents#}"
KWH_REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
CURSOR_OF_ANOTHER_METER = encode_cursor(["M-0002", "2026-01-01T00:00:00+00:00", None, None])
CURSOR_WITH_A_NAIVE_TIME = encode_cursor(["M-0001", "x", "2026-01-01T00:00:00", "energy_import"])
DAY: dict[str, Any] = {"from": (datetime.now(UTC) - timedelta(days=2)).isoformat(), "to": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}


async def doc(api: httpx.AsyncClient, path: str, status: int = 200, **params: Any) -> tuple[ET.Element, httpx.Response]:
    resp = await api.get(path, params=params)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    return ET.fromstring(resp.content), resp


def reply(root: ET.Element) -> tuple[str, list[str]]:
    assert root.tag == f"{MSG}ResponseMessage"
    header = root.find(f"{MSG}Header")
    assert header is not None and header.findtext(f"{MSG}Verb") == "reply"
    result = root.findtext(f"{MSG}Reply/{MSG}Result")
    assert result is not None
    return result, [e.findtext(f"{MSG}reason") or "" for e in root.iterfind(f"{MSG}Reply/{MSG}Error")]


def readings_of(root: ET.Element) -> list[tuple[str, str, str, list[str], str]]:
    """(meter, timeStamp, value, quality codes, ReadingType) of every Readings element, in order."""
    out = []
    for mr in root.iterfind(f"{MSG}Payload/{MR}MeterReadings/{MR}MeterReading"):
        meter = mr.findtext(f"{MR}Meter/{MR}mRID") or ""
        for r in mr.iterfind(f"{MR}Readings"):
            rt = r.find(f"{MR}ReadingType")
            assert rt is not None
            out.append((meter, r.findtext(f"{MR}timeStamp") or "", r.findtext(f"{MR}value") or "",
                        [q.get("ref", "") for q in r.iterfind(f"{MR}ReadingQualities/{MR}ReadingQualityType")],
                        rt.get("ref", "")))
    return out


def iso(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_meter_readings_reply_carries_every_reading_as_the_json_api_does(api: httpx.AsyncClient) -> None:
    root, _ = await doc(api, "/v1/cim/meter-readings", meter="M-0001", limit=100_000, **DAY)
    assert root.findtext(f"{MSG}Header/{MSG}Noun") == "MeterReadings"
    assert reply(root) == ("OK", [])
    mrs = root.findall(f"{MSG}Payload/{MR}MeterReadings/{MR}MeterReading")
    assert len(mrs) == 1
    meter = mrs[0].find(f"{MR}Meter")
    assert meter is not None and meter.findtext(f"{MR}mRID") == "M-0001"
    assert meter.findtext(f"{MR}Names/{MR}NameType/{MR}name") == "MeterNumber"
    assert mrs[0].findtext(f"{MR}UsagePoint/{MR}mRID") == "C-1"
    # Element order of the XSD: Meter before Readings before UsagePoint.
    tags = [c.tag for c in mrs[0]]
    assert tags[0] == f"{MR}Meter" and tags[-1] == f"{MR}UsagePoint"
    got = readings_of(root)
    want = await all_pages(api, "/v1/meters/M-0001/readings", limit=1000, **DAY)
    assert len(got) == len(want) > 50
    for (_, stamp, value, _, rtype), row in zip(got, want, strict=True):
        assert iso(stamp) == iso(row["ts"])
        assert value == text(row["value"]) and float(value) == row["value"]
        if row["channel"] == "energy_import":
            assert rtype == KWH_REGISTER
    assert all("e" not in v.lower() for _, _, v, _, _ in got)


async def test_suspect_reads_carry_the_failed_checks_quality_codes(api: httpx.AsyncClient) -> None:
    root, _ = await doc(api, "/v1/cim/meter-readings", meter="M-0004", channel="energy_import", **DAY)
    want = await all_pages(api, "/v1/meters/M-0004/readings", channel="energy_import", **DAY)
    got = readings_of(root)
    assert len(got) == len(want)
    suspects = [g for g, w in zip(got, want, strict=True) if w["status"] == "suspect"]
    assert suspects and all({"3.5.258", "3.6.4"} <= set(codes) for _, _, _, codes, _ in suspects)
    valid = [g for g, w in zip(got, want, strict=True) if w["status"] == "valid" and not w["quality"]]
    assert valid and all(codes == [] for _, _, _, codes, _ in valid)


@pytest.mark.parametrize("chunk", [5000, 7])
async def test_pages_add_up_to_the_whole_and_say_where_to_go_on(api: httpx.AsyncClient, chunk: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.cim.pages.CHUNK", chunk)  # the store is asked in chunks of this many
    whole, _ = await doc(api, "/v1/cim/meter-readings", meter=["M-0001", "M-0002"], **DAY)
    everything = readings_of(whole)
    assert {m for m, *_ in everything} == {"M-0001", "M-0002"}
    for meter in ("M-0001", "M-0002"):
        rows = await all_pages(api, f"/v1/meters/{meter}/readings", limit=1000, **DAY)
        assert len([e for e in everything if e[0] == meter]) == len(rows) > 3 * 7
    pieces: list[tuple[str, str, str, list[str], str]] = []
    cursor = None
    for _ in range(1000):
        root, resp = await doc(api, "/v1/cim/meter-readings", meter=["M-0001", "M-0002"], limit=37,
                               **DAY, **({"cursor": cursor} if cursor else {}))
        page = readings_of(root)
        assert len(page) <= 37
        pieces += page
        cursor = resp.headers.get("x-next-cursor")
        props = {p.findtext(f"{MSG}Name"): p.findtext(f"{MSG}Value")
                 for p in root.iterfind(f"{MSG}Header/{MSG}Property")}
        assert props.get("nextCursor") == cursor
        if cursor is None:
            break
    assert pieces == everything


async def test_a_consumers_document_has_its_usage_point_and_hourly_interval_blocks(api: httpx.AsyncClient) -> None:
    root, _ = await doc(api, "/v1/cim/meter-readings", consumer="C-1", intervals="hour", channel="energy_import", **DAY)
    mrs = root.findall(f"{MSG}Payload/{MR}MeterReadings/{MR}MeterReading")
    assert [m.findtext(f"{MR}Meter/{MR}mRID") for m in mrs] == ["M-0001"]
    blocks = mrs[0].findall(f"{MR}IntervalBlocks")
    assert len(blocks) == 1
    rt = blocks[0].find(f"{MR}ReadingType")
    assert rt is not None and rt.get("ref") == "0.0.7.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    now = datetime.now(UTC)
    want = await ok(api.get("/v1/meters/M-0001/consumption", params={
        "channel": "energy_import", "bucket": "hour", "from": DAY["from"], "to": now.isoformat()}))
    wanted = [(b["end"], b["value"]) for b in want["buckets"] if b["value"] is not None]
    got = [(r.findtext(f"{MR}timeStamp"), r.findtext(f"{MR}value")) for r in blocks[0].iterfind(f"{MR}IntervalReadings")]
    assert len(got) == len(wanted) >= 1
    for (stamp, value), (end, number) in zip(got, wanted, strict=True):
        assert iso(stamp or "") == iso(end) and float(value or "nan") == number


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"meter": "NOPE"}, 404, "NOPE"),
    ({"consumer": "C-NOPE"}, 404, "C-NOPE"),
    ({"meter": "M-0001", "consumer": "C-1"}, 400, "either meter"),
    ({}, 400, "either meter"),
    ({"meter": "M-0001", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 400, "must be before"),
    ({"meter": "M-0001", **WIDE}, 400, "longer than 366 days"),
    ({"meter": "M-0001", "from": "2150-01-01T00:00:00Z", "to": "2150-01-02T00:00:00Z"}, 400, "in the future"),
    ({"meter": "M-0001", "cursor": "WzEsMiwzXQ"}, 400, "cursor"),
    ({"meter": "M-0001", "cursor": "bm9wZQ"}, 400, "cursor"),
    ({"meter": "M-0001", "cursor": "WzAsIngiLCJ5Il0"}, 400, "cursor"),  # [0,"x","y"]: decodes, not ours
    ({"meter": "M-0001", "cursor": CURSOR_OF_ANOTHER_METER}, 400, "cursor"),
    ({"meter": "M-0001", "cursor": CURSOR_WITH_A_NAIVE_TIME}, 400, "cursor"),
])
async def test_a_bad_request_is_a_failed_reply_saying_what(api: httpx.AsyncClient, params: dict[str, Any],
                                                         status: int, words: str) -> None:
    root, _ = await doc(api, "/v1/cim/meter-readings", status, **params)
    result, errors = reply(root)
    assert result == "FAILED" and len(errors) == 1 and words in errors[0], errors
    assert root.find(f"{MSG}Payload") is None


async def test_the_code_tables_are_data_a_deployment_overrides(store: Store, keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "reading_types.toml").write_text('[register]\nenergy_import = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"\n')
    app = create_app(store, key_cache_ttl=0, cim_tables=load_tables(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test",
                                 headers=keys.header("read")) as client:
        root, _ = await doc(client, "/v1/cim/meter-readings", meter="M-0001", channel="energy_import", **DAY)
    types = {t for *_, t in readings_of(root)}
    assert types == {"0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"}
    (tmp_path / "reading_types.toml").write_text('[register]\nenergy_import = "1.2.3"\n')
    with pytest.raises(TableError, match=r"reading_types.toml: \[register\] energy_import = '1.2.3'"):
        load_tables(tmp_path)
    (tmp_path / "reading_types.toml").write_text('[register]\ntorque = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"\n')
    with pytest.raises(TableError, match="'torque' is not a known channel"):
        load_tables(tmp_path)


async def test_unmapped_channels_make_a_partial_reply_that_names_them(store: Store, keys: Keys, tmp_path: Path) -> None:
    tables = load_tables()
    types = dict(tables.register_types)
    types.pop(next(iter(types)))  # energy_import
    from dataclasses import replace
    app = create_app(store, key_cache_ttl=0, cim_tables=replace(tables, register_types=types))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test",
                                 headers=keys.header("read")) as client:
        root, _ = await doc(client, "/v1/cim/meter-readings", meter="M-0001", **DAY)
    result, errors = reply(root)
    assert result == "PARTIAL" and "energy_import" in errors[0]
    assert readings_of(root) and all(t != KWH_REGISTER for *_, t in readings_of(root))


async def test_end_device_events_reply_with_their_event_type_codes(api: httpx.AsyncClient) -> None:
    root, _ = await doc(api, "/v1/cim/end-device-events", **DAY)
    assert root.findtext(f"{MSG}Header/{MSG}Noun") == "EndDeviceEvents"
    assert reply(root) == ("OK", [])
    events = root.findall(f"{MSG}Payload/{EV}EndDeviceEvents/{EV}EndDeviceEvent")
    json_events = await all_pages(api, "/v1/events", limit=500, **DAY)
    tables = load_tables()
    mapped = [e for e in json_events if e["meter_id"] and e["kind"] in {k.value for k in tables.event_types}]
    assert len(events) == len(mapped) > 0
    for element, row in zip(events, mapped, strict=True):
        assert iso(element.findtext(f"{EV}createdDateTime") or "") == iso(row["ts"])
        assert element.findtext(f"{EV}severity") == row["severity"]
        assert element.findtext(f"{EV}Assets/{EV}mRID") == row["meter_id"]
        ref = element.find(f"{EV}EndDeviceEventType")
        assert ref is not None
        device = "18" if tables.event_types[row["kind"]][0] == "prepayment" else ("3" if row["meter_id"].startswith("M") else None)
        code = ref.get("ref", "")
        assert code.endswith(tables.event_types[row["kind"]][1])
        if device is not None:
            assert code.split(".")[0] == device


def test_values_are_plain_decimals_and_text_is_always_xml() -> None:
    from api.cim.documents import _el
    assert [text(v) for v in (12345.6, 50.02, 1e16, 0.0001, 1e-7)] == ["12345.6", "50.02", "10000000000000000",
                                                                        "0.0001", "0.0000001"]
    ET.fromstring(_el("a", "nul\x00 bell\x07 <&> \ud800"))


def request_message(*selectors: str, verb: str = "get", start: str | None = None, end: str | None = None) -> bytes:
    window = ""
    if start and end:
        window = f"<msg:Request><msg:StartTime>{start}</msg:StartTime><msg:EndTime>{end}</msg:EndTime></msg:Request>"
    return (f'<?xml version="1.0"?><msg:RequestMessage xmlns:msg="http://iec.ch/TC57/2011/schema/message" '
            f'xmlns:g="http://iec.ch/TC57/2011/GetMeterReadings#"><msg:Header><msg:Verb>{verb}</msg:Verb>'
            f"<msg:Noun>MeterReadings</msg:Noun><msg:MessageID>req-42</msg:MessageID></msg:Header>{window}"
            f"<msg:Payload><g:GetMeterReadings>{''.join(selectors)}</g:GetMeterReadings></msg:Payload>"
            "</msg:RequestMessage>").encode()


async def post(api: httpx.AsyncClient, body: bytes, status: int = 200) -> ET.Element:
    resp = await api.post("/v1/cim/get-meter-readings", content=body, headers={"Content-Type": "application/xml"})
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    return ET.fromstring(resp.content)


async def test_a_get_request_message_is_answered_like_the_get_route(api: httpx.AsyncClient) -> None:
    body = request_message("<g:EndDevice><g:mRID>M-0001</g:mRID></g:EndDevice>",
                           f"<g:ReadingType><g:mRID>{KWH_REGISTER}</g:mRID></g:ReadingType>",
                           start=DAY["from"], end=DAY["to"])
    root = await post(api, body)
    assert reply(root) == ("OK", [])
    assert root.findtext(f"{MSG}Header/{MSG}CorrelationID") == "req-42"
    by_get, _ = await doc(api, "/v1/cim/meter-readings", meter="M-0001", channel="energy_import", **DAY)
    assert readings_of(root) == readings_of(by_get) and len(readings_of(root)) > 5
    by_usage_point = await post(api, request_message("<g:UsagePoint><g:mRID>C-1</g:mRID></g:UsagePoint>",
                                                     start=DAY["from"], end=DAY["to"]))
    whole, _ = await doc(api, "/v1/cim/meter-readings", consumer="C-1", **DAY)
    assert readings_of(by_usage_point) == readings_of(whole)


LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
          b"<lolz>&lol2;</lolz>")
EXTERNAL = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'


@pytest.mark.parametrize(("body", "words"), [
    (LAUGHS, "refused"),
    (EXTERNAL, "refused"),
    (b"<not-closed>", "not well-formed"),
    (b"\xff\xfe garbage", "not well-formed"),
    (b"<RequestMessage/>", "root element must be RequestMessage"),
    (request_message("<g:EndDevice><g:mRID>M-0001</g:mRID></g:EndDevice>", verb="create"), "Verb 'get'"),
    (request_message("<g:EndDevice/>"), "EndDevice[1] has neither mRID"),
    (request_message("<g:EndDevice><g:mRID>M-0001</g:mRID></g:EndDevice>",
                     "<g:ReadingType><g:mRID>9.9.9</g:mRID></g:ReadingType>"), "ReadingType '9.9.9'"),
    (request_message("<g:EndDevice><g:mRID>M-0001</g:mRID></g:EndDevice>", start="yesterday", end="today"),
     "not an ISO 8601"),
    (request_message("<g:EndDevice><g:mRID>NOPE</g:mRID></g:EndDevice>"), "NOPE"),
])
async def test_a_bad_request_message_is_a_failed_reply(api: httpx.AsyncClient, body: bytes, words: str) -> None:
    root = await post(api, body, 404 if b"NOPE" in body else 400)
    result, errors = reply(root)
    assert result == "FAILED" and words in errors[0], errors
    assert root.find(f"{MSG}Payload") is None


async def test_json_readings_and_the_feed_carry_the_same_quality_codes_as_the_cim_reply(
        api: httpx.AsyncClient, store: Store, keys: Keys, tmp_path: Path) -> None:
    """Issue 24 item 9: every reading in the JSON API and the feed also carries its qualities as
    IEC 61968-9 codes, from the same table the CIM replies use (a deployment's override included)."""
    root, _ = await doc(api, "/v1/cim/meter-readings", meter="M-0004", channel="energy_import", **DAY)
    want = await all_pages(api, "/v1/meters/M-0004/readings", channel="energy_import", **DAY)
    assert [codes for *_, codes, _ in readings_of(root)] == [w["quality_codes"] for w in want]
    assert any(w["status"] == "suspect" and "3.6.4" in w["quality_codes"] for w in want)
    feed = (await ok(api.get("/v1/readings/feed", params={"limit": 10_000})))["items"]
    assert any(r["status"] == "suspect" for r in feed)
    assert all(r["quality_codes"][:1] == ["3.5.258"] for r in feed if r["status"] == "suspect")
    assert all(r["quality_codes"] == [] for r in feed if r["status"] == "valid" and not r["quality"])
    latest = (await ok(api.get("/v1/meters/M-0004/readings/latest")))["items"]
    assert latest and all("quality_codes" in r for r in latest)
    (tmp_path / "reading_qualities.toml").write_text('[flags]\nregression = "3.6.1004"\n')
    app = create_app(store, key_cache_ttl=0, cim_tables=load_tables(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test",
                                 headers=keys.header("read")) as client:
        mine = await all_pages(client, "/v1/meters/M-0004/readings", channel="energy_import", **DAY)
    assert any("3.6.1004" in r["quality_codes"] for r in mine)
    assert not any("3.6.4" in r["quality_codes"] for r in mine)
