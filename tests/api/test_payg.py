"""PAYG over HTTP: balances, the fleet summary, commands through a running gateway's MQTT path."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from simulators.broker import Broker
from simulators.mqtt.payg import PaygFleet
from storage.keys import Scope
from tests.api.helpers import WIDE, all_pages, fails, ok
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

PAYG = ("P-0001", "P-0002", "P-0003")


async def test_latest_balance_and_history(api: httpx.AsyncClient) -> None:
    history = await all_pages(api, "/v1/meters/P-0001/balances", limit=2, **WIDE)
    latest = await ok(api.get("/v1/meters/P-0001/balance"))

    stamps = [b["ts"] for b in history]
    assert len(history) >= 4 and stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert latest == history[-1] and latest["currency"] == "KES"
    assert Decimal(latest["balance"]) == Decimal(latest["balance"]).quantize(Decimal("0.01"))  # exact money
    assert (await ok(api.get("/v1/meters/P-0001/balances")))["items"] == [
        b for b in history if b["ts"] >= history[0]["ts"]][:1000]  # default: the last 30 days
    await fails(api.get("/v1/meters/M-0001/balance"), 404, "not_found", "balance of meter")
    await fails(api.get("/v1/meters/P-9999/balance"), 404, "not_found", "P-9999")


async def test_payg_summary_adds_up_the_latest_balances(api: httpx.AsyncClient) -> None:
    latest = [await ok(api.get(f"/v1/meters/{m}/balance")) for m in PAYG]

    summary = await ok(api.get("/v1/payg/summary"))

    [kes] = summary["currencies"]
    assert (kes["currency"], kes["meters"]) == ("KES", 3)
    assert Decimal(kes["total_balance"]) == sum(Decimal(b["balance"]) for b in latest)
    assert kes["low_credit"] == summary["low_credit"] == sum(b["low_credit"] for b in latest)
    assert summary["disconnected"] == sum(b["relay"] == "disconnected" for b in latest)
    assert summary["emergency_credit"] == sum(b["emergency_credit_in_use"] for b in latest)


async def test_commands_need_an_mqtt_gateway(api: httpx.AsyncClient) -> None:
    await fails(api.post("/v1/meters/P-0001/commands", json={"kind": "disconnect"}), 409, "conflict",
                "cannot send PAYG commands")
    await fails(api.post("/v1/meters/M-0001/commands", json={"kind": "disconnect"}), 404, "not_found",
                "PAYG meter")
    await fails(api.post("/v1/meters/P-0001/commands", json={"kind": "explode"}), 422, "invalid_request",
                "body.kind")
    await fails(api.post("/v1/meters/P-0001/commands", json={"kind": "topup", "amount": "-5"}), 422,
                "invalid_request", "body.amount")
    await fails(api.get("/v1/commands/nope"), 404, "not_found", "command")
    assert await ok(api.get("/v1/meters/P-0001/commands")) == {"items": [], "next_cursor": None}


async def test_topup_through_a_running_gateway(tmp_path: Path, mqtt_broker: Broker) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-0001"])
    async with PaygFleet(mqtt_broker.host, mqtt_broker.port, 1, meter_ids=["P-0001"], interval=0.2), \
            running_gateway(cfg, scopes=frozenset({Scope.READ, Scope.WRITE})) as (_, api):
        async def balance_arrived() -> bool:
            return (await api.get("/v1/meters/P-0001/balance")).status_code == 200

        await eventually(balance_arrived, timeout=30)

        sent = await ok(api.post("/v1/meters/P-0001/commands",
                                 json={"kind": "topup", "amount": "250.00", "reference": "PAY-1"}), 202)

        assert (sent["kind"], sent["status"], sent["reference"], Decimal(sent["amount"])) == (
            "topup", "pending", "PAY-1", Decimal("250.00"))

        async def settled() -> dict[str, Any] | None:
            body = await ok(api.get(f"/v1/commands/{sent['correlation_id']}"))
            return body if body["status"] != "pending" else None

        done = await eventually(settled, timeout=30)
        assert done["status"] == "acknowledged"
        listed = (await ok(api.get("/v1/meters/P-0001/commands")))["items"]
        assert [c["correlation_id"] for c in listed] == [sent["correlation_id"]]
