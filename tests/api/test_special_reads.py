"""Special reads on a running gateway: a Modbus meter read now through its driver (stored as a real
reading, in the feed once, with its reason in the CIM export), a meter that never answers (timed_out,
the others unaffected), a PAYG meter answered from its latest message, a move-out whose closing read
is the special read, and the requests that must be refused."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import PaygFleet
from tests.api.helpers import fails, ok
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.ports import free_port

MR = "{http://iec.ch/TC57/2011/MeterReadings#}"


async def finished(api: httpx.AsyncClient, correlation_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body: dict[str, Any] = await ok(api.get(f"/v1/reads/{correlation_id}"))
        return body if body["state"] not in ("queued", "in_progress") else None

    got: dict[str, Any] = await eventually(done, timeout=30)
    return got


async def feed(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = None
    while True:
        body = await ok(api.get("/v1/readings/feed", params={"limit": 5000, **({"after": after} if after else {})}))
        items += body["items"]
        after = body["next_cursor"]
        if not body["more"]:
            return items


async def test_a_polled_meter_is_read_now_stored_once_and_exported_with_its_reason(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 3, seed=5, speedup=60) as fleet:
        # A long interval: the special read is the only read of its second.
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=30.0,
                             special_reads={"timeout": 2.0})
        async with running_gateway(cfg) as (_, api):
            await eventually(lambda: _has_reads(api, "M-0001"), timeout=30)
            fleet.set_fault("M-0003", "timeout")
            asked = await ok(api.post("/v1/meters/M-0001/reads", json={"reason": "inquiry"}), 202)
            assert asked["state"] == "queued" and asked["reason"] == "inquiry" and asked["key_id"]
            silent = await ok(api.post("/v1/meters/M-0003/reads", json={"reason": "inquiry"}), 202)
            await fails(api.post("/v1/meters/M-0003/reads", json={"reason": "moveOut"}), 409, "conflict",
                        "already under way")
            read = await finished(api, asked["correlation_id"])
            assert read["state"] == "completed" and read["detail"] == "polled now"
            values = {v["channel"]: v["value"] for v in read["values"]}
            assert "energy_import" in values

            async def stored() -> list[dict[str, Any]] | None:
                rows = [r for r in await feed(api) if r["meter_id"] == "M-0001" and r["ts"] == read["ts"]]
                return rows if {r["channel"] for r in rows} == set(values) else None

            rows = await eventually(stored, timeout=30)
            assert {r["channel"]: r["value"] for r in rows} == values  # in the feed, once each
            assert len(rows) == len(values)
            timed_out = await finished(api, silent["correlation_id"])
            assert timed_out["state"] == "timed_out" and "did not answer within 2 s" in timed_out["detail"]
            # The other meters are unaffected: M-0002 answers a read of its own.
            other = await finished(api, (await ok(api.post("/v1/meters/M-0002/reads", json={
                "reason": "serviceConnect", "channels": ["energy_import", "current_l3", "voltage_l1"]}), 202))[
                "correlation_id"])
            assert other["state"] in ("completed", "partial") and other["values"]
            # The CIM export gives the read's readings their reason.
            ts = read["ts"]
            resp = await api.get("/v1/cim/meter-readings", params={
                "meter": "M-0001", "channel": "energy_import", "from": ts, "to": _after(ts)})
            root = ET.fromstring(resp.content)
            reasons = [r.findtext(f"{MR}reason") for r in root.iter(f"{MR}Readings")]
            assert reasons == ["inquiry"]


async def test_a_move_out_read_is_the_closing_read(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 1, seed=9, speedup=600) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=1, interval=30.0)
        async with running_gateway(cfg) as (_, api):
            await eventually(lambda: _has_reads(api, "M-0001"), timeout=30)
            await asyncio.sleep(1.0)  # the simulated register advances past the scheduled read
            read = await finished(api, (await ok(api.post("/v1/meters/M-0001/reads", json={
                "reason": "moveOut", "channels": ["energy_import"]}), 202))["correlation_id"])
            assert read["state"] == "completed"
            [(_, value)] = [(v["channel"], v["value"]) for v in read["values"]]

            async def in_store() -> bool:
                got = await ok(api.get("/v1/meters/M-0001/readings", params={
                    "channel": "energy_import", "from": read["ts"], "to": _after(read["ts"])}))
                return bool(got["items"])

            await eventually(in_store, timeout=30)
            await ok(api.post("/v1/meters/M-0001/assignments", json={"consumer_number": "C-NEXT",
                                                                     "start": read["ts"]}), 201)
            old, new = (await ok(api.get("/v1/meters/M-0001/assignments")))["items"]
            assert old["consumer_number"] == "C-1" and old["closing"]["value"] == value
            assert new["opening"]["value"] == value and new["opening"]["ts"] == old["closing"]["ts"]


async def test_a_payg_meter_answers_from_its_latest_message_and_says_so(tmp_path: Path) -> None:
    with Broker(tmp_path / "mosquitto") as broker:
        cfg = gateway_config(tmp_path / "gw", broker_port=broker.port, payg_ids=["P-0001", "P-0002"],
                             special_reads={"max_age": 60})
        async with running_gateway(cfg) as (_, api), \
                PaygFleet(broker.host, broker.port, 1, seed=2, interval=0.3, meter_ids=["P-0001"], currency="KES"):
            await eventually(lambda: _has_balance(api, "P-0001"), timeout=30)
            read = await finished(api, (await ok(api.post("/v1/meters/P-0001/reads", json={"reason": "inquiry"}),
                                                 202))["correlation_id"])
            assert read["state"] == "completed" and "latest message" in read["detail"] and "KES" in read["detail"]
            never = await finished(api, (await ok(api.post("/v1/meters/P-0002/reads", json={"reason": "inquiry"}),
                                                  202))["correlation_id"])
            assert never["state"] == "failed" and "nothing arrived within the last 60 s" in never["detail"]


async def test_two_requests_at_once_make_one_read(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 1, seed=5, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=1, interval=30.0)
        async with running_gateway(cfg) as (_, api):
            await eventually(lambda: _has_reads(api, "M-0001"), timeout=30)
            fleet.set_fault("M-0001", "slow", delay=0.3)
            answers = await asyncio.gather(*(api.post("/v1/meters/M-0001/reads", json={"reason": "inquiry"})
                                             for _ in range(4)))
            assert sorted(a.status_code for a in answers) == [202, 409, 409, 409]
            (taken,) = [a.json() for a in answers if a.status_code == 202]
            assert (await finished(api, taken["correlation_id"]))["state"] == "completed"
            # Once it is done, the meter can be read again.
            await ok(api.post("/v1/meters/M-0001/reads", json={"reason": "inquiry"}), 202)


async def test_a_read_a_stopped_gateway_left_open_is_closed_at_the_next_start(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from gateway.model.reads import ReadReason, ReadState, SpecialRead

    cfg = gateway_config(tmp_path / "gw", modbus_port=free_port(), n_modbus=1, interval=30.0)
    async with running_gateway(cfg) as (gw, api):
        assert gw.store is not None
        left = SpecialRead("left-open", "M-0001", ReadReason.MOVE_OUT, datetime.now(UTC), state=ReadState.IN_PROGRESS)
        await gw.store.save_special_read(left)
        await fails(api.post("/v1/meters/M-0001/reads", json={"reason": "inquiry"}), 409, "conflict",
                    "left-open")
    async with running_gateway(cfg) as (_, api):
        async def closed() -> dict[str, Any] | None:
            body: dict[str, Any] = await ok(api.get("/v1/reads/left-open"))
            return body if body["state"] == "failed" else None

        got = await eventually(closed, timeout=30)
        assert "interrupted" in got["detail"]
        await ok(api.post("/v1/meters/M-0001/reads", json={"reason": "inquiry"}), 202)


async def test_requests_that_cannot_be_served_say_why(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 2, seed=5, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, interval=30.0)
        async with running_gateway(cfg) as (_, api):
            await fails(api.post("/v1/meters/NOPE/reads", json={"reason": "inquiry"}), 404, "not_found", "NOPE")
            await fails(api.post("/v1/meters/M-0001/reads", json={"reason": "sometime"}), 422, "invalid_request",
                        "body.reason")
            await fails(api.post("/v1/meters/M-0001/reads", json={"reason": "inquiry", "channels": ["torque"]}),
                        422, "invalid_request", "body.channels")
            await fails(api.get("/v1/reads/no-such-read"), 404, "not_found", "no-such-read")
            await ok(api.post("/v1/meters/M-0002/deactivate"))
            await fails(api.post("/v1/meters/M-0002/reads", json={"reason": "inquiry"}), 409, "conflict",
                        "inactive")
            assert fleet.port


async def _has_reads(api: httpx.AsyncClient, meter_id: str) -> bool:
    got = await ok(api.get(f"/v1/meters/{meter_id}/readings/latest"))
    return bool(got["items"])


async def _has_balance(api: httpx.AsyncClient, meter_id: str) -> bool:
    resp = await api.get(f"/v1/meters/{meter_id}/balance")
    return resp.status_code == 200


def _after(ts: str) -> str:
    from datetime import datetime
    return (datetime.fromisoformat(ts.replace("Z", "+00:00")) + timedelta(milliseconds=1)).isoformat()
