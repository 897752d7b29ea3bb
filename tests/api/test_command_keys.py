"""Issue 27, item 1, through the API of a running gateway, a real Mosquitto and the simulated PAYG meter:
a command is sent once per key (its reference, or the Idempotency-Key header), also for 8 posts at once and
after a restart; a different body under a key is a 409; an amount with more decimals than its currency has
is a 422. What the meter received is counted behind a barrier: a reconnect posted last reaches the meter
after anything the gateway published before it (QoS 1, one connection, one topic)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.broker import Broker
from simulators.mqtt.payg import PaygFleet
from tests.api.helpers import fails, ok
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

METER = "P-00003"
COMMANDS = f"/v1/meters/{METER}/commands"
TOPUP = {"kind": "topup", "amount": "100.50", "reference": "rcpt-0001"}


@pytest.fixture
async def meter(mqtt_broker: Broker) -> AsyncIterator[PaygFleet]:
    """The simulated meter, answering commands (no periodic reports: its balance moves only by top-ups)."""
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 1, meter_ids=[METER], seed=3)
    sim = fleet.meters[METER]
    sim.debt, sim.emergency_credit, sim.emergency_in_use = Decimal(0), sim.emergency_limit, False
    await fleet.start(run=False)
    try:
        await fleet.wait_connected()
        yield fleet
    finally:
        await fleet.stop()


async def received(api: httpx.AsyncClient, fleet: PaygFleet) -> list[dict[str, object]]:
    """Every command the meter got before a barrier (a reconnect posted now), barrier excluded."""
    barrier = await ok(api.post(COMMANDS, json={"kind": "reconnect"}), 202)
    await eventually(lambda: any(c.get("correlation_id") == barrier["correlation_id"] for c in fleet.commands))
    return [c for c in fleet.commands if c.get("correlation_id") != barrier["correlation_id"]]


async def settled(api: httpx.AsyncClient, correlation_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body: dict[str, Any] = await ok(api.get(f"/v1/commands/{correlation_id}"))
        return body if body["status"] != "pending" else None

    result: dict[str, Any] = await eventually(probe)
    return result


async def test_the_same_reference_twice_credits_the_meter_once(tmp_path: Path, mqtt_broker: Broker,
                                                               meter: PaygFleet) -> None:
    before = meter.meters[METER].balance
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=[METER])
    async with running_gateway(cfg) as (_, api):
        first = await api.post(COMMANDS, json=TOPUP)
        assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers, first.text
        done = await settled(api, first.json()["correlation_id"])
        assert done["status"] == "acknowledged"

        again = await api.post(COMMANDS, json={**TOPUP, "amount": "100.5"})  # the same amount, written otherwise

        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true", again.text
        assert again.json() == done  # the original command and its status now
        got = await received(api, meter)
        assert [(c["command"], c["correlation_id"]) for c in got] == [("topup", done["correlation_id"])]
        assert meter.meters[METER].balance == before + Decimal("100.50")
        assert [c["correlation_id"] for c in (await ok(api.get(COMMANDS)))["items"] if c["kind"] == "topup"] == [
            done["correlation_id"]]


@pytest.mark.parametrize("backend", ["sqlite", "timescale"])
async def test_eight_simultaneous_posts_send_one_command(tmp_path: Path, mqtt_broker: Broker, meter: PaygFleet,
                                                         backend: str, request: pytest.FixtureRequest) -> None:
    meter.set_fault(METER, "no_reply")  # the command stays pending: all eight answers must be the same
    dsn = request.getfixturevalue("timescale_dsn") if backend == "timescale" else None
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=[METER], backend=backend, dsn=dsn)
    async with running_gateway(cfg) as (_, api):
        body = {"kind": "topup", "amount": "250"}
        answers = await asyncio.gather(*(api.post(COMMANDS, json=body, headers={"Idempotency-Key": "req-7f3a"})
                                         for _ in range(8)))

        assert sorted(a.status_code for a in answers) == [200] * 7 + [202], [a.text for a in answers]
        (first, *rest) = [a.json() for a in answers]
        assert first["status"] == "pending" and first["idempotency_key"] == "req-7f3a"
        assert all(r == first for r in rest)
        got = await received(api, meter)
        assert [(c["command"], c["correlation_id"]) for c in got] == [("topup", first["correlation_id"])]


async def test_a_repeat_after_a_restart_returns_the_original(tmp_path: Path, mqtt_broker: Broker,
                                                             meter: PaygFleet) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=[METER])
    async with running_gateway(cfg) as (_, api):
        sent = await ok(api.post(COMMANDS, json=TOPUP), 202)
        done = await settled(api, sent["correlation_id"])
    async with running_gateway(cfg) as (_, api):  # a new gateway process on the same store
        again = await api.post(COMMANDS, json=TOPUP)

        assert (again.status_code, again.json()) == (200, done)
        assert [c["command"] for c in await received(api, meter)] == ["topup"]


async def test_a_different_body_under_a_key_is_a_409_and_nothing_is_sent(tmp_path: Path, mqtt_broker: Broker,
                                                                         meter: PaygFleet) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=[METER, "P-00004"])
    async with running_gateway(cfg) as (_, api):
        sent = await ok(api.post(COMMANDS, json=TOPUP), 202)
        cid = sent["correlation_id"]
        keyed = await ok(api.post(COMMANDS, json={"kind": "disconnect"}, headers={"Idempotency-Key": "k-1"}), 202)

        await fails(api.post(COMMANDS, json={**TOPUP, "amount": "200.00"}), 409, "conflict",
                    f"reference 'rcpt-0001' already names command {cid}",
                    "amount: 200.00 in this request, 100.50 in the stored command",
                    "a new payment needs a new reference")
        await fails(api.post("/v1/meters/P-00004/commands", json=TOPUP), 409, "conflict",
                    "meter_id: P-00004 in this request, P-00003 in the stored command")
        await fails(api.post(COMMANDS, json={"kind": "reconnect"}, headers={"Idempotency-Key": "k-1"}), 409,
                    "conflict", f"Idempotency-Key 'k-1' already names command {keyed['correlation_id']}",
                    "kind: reconnect in this request, disconnect in the stored command",
                    "a new command needs a new key")
        # A reference that is new, with a key that is not: the key is the command's too.
        await fails(api.post(COMMANDS, json={"kind": "disconnect", "reference": "ord-9"},
                             headers={"Idempotency-Key": "k-1"}), 409, "conflict",
                    "reference: ord-9 in this request, none in the stored command")
        # The same key again with the same body is a repeat, also with the header.
        assert (await api.post(COMMANDS, json={"kind": "disconnect"}, headers={"Idempotency-Key": "k-1"})
                ).status_code == 200

        got = await received(api, meter)
        assert sorted(str(c["command"]) for c in got) == ["disconnect", "topup"]
        assert len((await ok(api.get(COMMANDS)))["items"]) == 3  # the two, and the barrier: nothing stored for a 409


async def test_bad_amounts_and_keys_are_422_and_nothing_is_sent(tmp_path: Path, mqtt_broker: Broker,
                                                                meter: PaygFleet) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=[METER])
    async with running_gateway(cfg) as (_, api):
        body = await fails(api.post(COMMANDS, json={"kind": "topup", "amount": "10.005", "reference": "rcpt-2"}),
                           422, "invalid_request", "body.amount", "10.005 KES has 3 decimal places",
                           "KES allows at most 2 (its ISO 4217 minor unit")
        assert body["where"] == "body.amount" and body["problems"] == [body["message"]]
        for amount in ("-5", "0", "NaN", "Infinity", "1e30", "0.0000001", "12345678901234567890"):
            await fails(api.post(COMMANDS, json={"kind": "topup", "amount": amount}), 422, "invalid_request",
                        "body.amount")
        for key in ("has space", "x" * 201, "-starts-with-a-dash", ""):
            await fails(api.post(COMMANDS, json={"kind": "disconnect"}, headers={"Idempotency-Key": key}), 422,
                        "invalid_request", "header.Idempotency-Key")

        assert await received(api, meter) == []
        assert len((await ok(api.get(COMMANDS)))["items"]) == 1  # the barrier only
        # Refused, nothing kept: the reference is free for the right amount.
        await ok(api.post(COMMANDS, json={"kind": "topup", "amount": "10.01", "reference": "rcpt-2"}), 202)


async def test_currency_decimals_allow_a_vendor_more(tmp_path: Path, mqtt_broker: Broker, meter: PaygFleet) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=[METER],
                         mqtt={"currency_decimals": {"KES": 3}})
    async with running_gateway(cfg) as (_, api):
        sent = await ok(api.post(COMMANDS, json={"kind": "topup", "amount": "10.005"}), 202)
        await fails(api.post(COMMANDS, json={"kind": "topup", "amount": "10.0005"}), 422, "invalid_request",
                    "10.0005 KES has 4 decimal places; KES allows at most 3 ([mqtt] currency_decimals)")
        assert [(c["command"], c["correlation_id"]) for c in await received(api, meter)] == [
            ("topup", sent["correlation_id"])]


async def test_the_openapi_document_lists_repeats_conflicts_and_the_key(api: httpx.AsyncClient) -> None:
    doc = await ok(api.get("/openapi.json"))
    op = doc["paths"]["/v1/meters/{meter_id}/commands"]["post"]

    assert {"200", "202", "409", "422"} <= set(op["responses"])
    assert "Idempotent-Replayed" in op["responses"]["200"]["headers"]
    assert "another body" in op["responses"]["409"]["description"]
    (key,) = [p for p in op["parameters"] if p["in"] == "header"]
    assert (key["name"], key["schema"]["anyOf"][0]["maxLength"]) == ("Idempotency-Key", 200)
    schema = doc["components"]["schemas"]["CommandIn"]["properties"]
    assert "ISO 4217" in schema["amount"]["description"] and "whole store" in schema["reference"]["description"]
