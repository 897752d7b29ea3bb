"""Events (filters, pages) and the fleet summary over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from api.app import create_app
from gateway.model import Batch, Event, EventKind, Severity
from storage.base import Store
from tests.api.conftest import Keys
from tests.api.helpers import all_pages, fails, ok

T = datetime(2026, 3, 1, tzinfo=UTC)


async def test_events_filter_and_page(api: httpx.AsyncClient, store: Store) -> None:
    extra = [Event(T + timedelta(minutes=m), "M-0003", EventKind.TAMPER if m % 2 else EventKind.COMM_LOST,
                   Severity.WARNING, f"event {m}") for m in range(7)]
    await store.write(Batch(events=extra))

    everything = await all_pages(api, "/v1/events", limit=3)
    mine = await all_pages(api, "/v1/events", meter_id="M-0003", limit=2)
    window = await ok(api.get("/v1/events", params={"meter_id": "M-0003", "kind": "tamper",
                                                     "from": (T + timedelta(minutes=2)).isoformat(),
                                                     "to": (T + timedelta(minutes=5)).isoformat()}))

    keys = [(e["ts"], e["seq"]) for e in everything]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
    assert any(e["kind"] == "anomaly" and e["meter_id"] == "M-0004" for e in everything)  # from the simulators
    assert [e["detail"] for e in mine] == [f"event {m}" for m in range(6, -1, -1)]
    assert [e["detail"] for e in window["items"]] == ["event 3"]
    await fails(api.get("/v1/events", params={"kind": "party"}), 422, "invalid_request", "query.kind")
    await fails(api.get("/v1/events", params={"from": T.isoformat(), "to": T.isoformat()}), 400,
                "invalid_request", "must be before")


async def test_fleet_summary(store: Store, keys: Keys) -> None:
    def client(now: datetime) -> httpx.AsyncClient:
        app = create_app(store, key_cache_ttl=0, clock=lambda: now)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test",
                                 headers=keys.header("read"))

    async with client(datetime.now(UTC)) as api:
        await ok(api.patch("/v1/meters/M-0002", json={"status": "maintenance"}, headers=keys.header("write")))
        await ok(api.post("/v1/meters", json={"meter_id": "G-1", "utility": "gas", "protocol": "mqtt"},
                          headers=keys.header("write")), 201)
        now = await ok(api.get("/v1/fleet/summary"))
        now_silent = await all_pages(api, "/v1/fleet/silent")
    async with client(datetime.now(UTC) + timedelta(hours=2)) as api:
        later = await ok(api.get("/v1/fleet/summary"))
        later_silent = await all_pages(api, "/v1/fleet/silent", limit=3)  # three pages
    async with client(datetime.now(UTC) + timedelta(days=2)) as api:
        days_later = await ok(api.get("/v1/fleet/summary"))

    assert now["meters"] == 8 and now["by_status"] == {"active": 7, "inactive": 0, "maintenance": 1}
    # Without a running gateway the intervals are unknown: silent after an hour without data.
    assert (now["silent"], later["silent"]) == (1, 7)
    assert [(s["meter_id"], s["last_seen"], s["silent_after_s"]) for s in now_silent] == [("G-1", None, 3600.0)]
    assert [s["meter_id"] for s in later_silent] == ["G-1", "M-0001", "M-0003", "M-0004", "P-0001", "P-0002",
                                                     "P-0003"]  # M-0002 is in maintenance
    assert all(s["last_seen"] is not None for s in later_silent[1:])
    assert now["anomalies_24h"]["by_kind"].get("anomaly", 0) >= 1 and "M-0004" in now["anomalies_24h"]["meters"]
    assert days_later["anomalies_24h"] == {"total": 0, "by_kind": {}, "meters": []}


async def test_emergency_credit_and_command_kinds_are_listed_and_filterable(api: httpx.AsyncClient,
                                                                           store: Store) -> None:
    emergency = Event(T, "P-0001", EventKind.EMERGENCY_CREDIT, Severity.CRITICAL, "emergency credit in use")
    command = Event(T + timedelta(minutes=1), "P-0001", EventKind.COMMAND, Severity.INFO,
                    "command disconnect, correlation id gw.1: acknowledged by the meter")
    await store.write(Batch(events=[emergency, command]))

    for kind, detail in (("emergency_credit", emergency.detail), ("command", command.detail)):
        got = await all_pages(api, "/v1/events", meter_id="P-0001", kind=kind)
        assert [(e["kind"], e["detail"]) for e in got] == [(kind, detail)]
    document = (await api.get("/openapi.json")).json()
    (param,) = [p for p in document["paths"]["/v1/events"]["get"]["parameters"] if p["name"] == "kind"]
    assert {"$ref": "#/components/schemas/EventKind"} in param["schema"]["anyOf"]
    assert {"emergency_credit", "command"} <= set(document["components"]["schemas"]["EventKind"]["enum"])
