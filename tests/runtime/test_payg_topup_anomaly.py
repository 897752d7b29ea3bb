"""A top-up through the API, the simulated meter's reply and its periodic balances, through a real broker
into a running gateway: the balance update the meter sends as part of its reply is not read as consumption
(issue 27, item 12), while a real suspicious drain still raises an anomaly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.broker import Broker
from simulators.mqtt.payg import PaygFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

METER = "P-00003"


class MeterClock:
    """The simulated meter's clock: moved by the test, so the periodic stream is exactly one report a minute."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def stored_balances(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await api.get(f"/v1/meters/{METER}/balances", params={"from": "2000-01-01T00:00:00Z"})
    return r.json()["items"] if r.status_code == 200 else []


async def events_of(api: httpx.AsyncClient, kind: str) -> list[dict[str, Any]]:
    r = await api.get("/v1/events", params={"meter_id": METER, "kind": kind})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


@pytest.mark.parametrize("command", [
    {"kind": "topup", "amount": "100.50", "reference": "rcpt-0001"},
    # A reconnect of a meter that is connected: its reply's balance changes nothing but the time.
    {"kind": "reconnect"},
], ids=["topup", "reconnect"])
async def test_a_command_reply_and_the_next_periodic_balance_raise_no_anomaly(
        tmp_path: Path, mqtt_broker: Broker, command: dict[str, str]) -> None:
    clock = MeterClock(datetime.now(UTC) - timedelta(hours=1))
    fleet = PaygFleet(mqtt_broker.host, mqtt_broker.port, 1, meter_ids=[METER], seed=3, clock=clock)
    meter = fleet.meters[METER]
    # A household that uses a few KES each quarter-hour step (above the 1 KES the checker ignores).
    meter.base_kw, meter.tariff, meter.balance, meter.debt = 0.6, Decimal(25), Decimal(500), Decimal(0)
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=[METER])
    async with running_gateway(cfg) as (_, api):
        await fleet.start(run=False)
        try:
            await fleet.wait_connected()

            async def rounds(n: int) -> None:
                for _ in range(n):
                    clock.advance(60)
                    await fleet.publish_round()

            # The periodic stream: one report a minute, enough for the checker to learn the meter's drain.
            await rounds(8)
            await eventually(lambda: _count(api, 8))
            # The command lands a second before the next periodic report; the simulated meter answers
            # it and publishes its balance at once, as part of its reply.
            clock.advance(59)
            sent = await api.post(f"/v1/meters/{METER}/commands", json=command)
            assert sent.status_code == 202, sent.text
            await eventually(lambda: _count(api, 9))
            clock.advance(1)
            await fleet.publish_round()  # the periodic report one second after the reply
            await rounds(3)
            await eventually(lambda: _count(api, 13))
            balances = await stored_balances(api)
            reply, after = balances[8], balances[9]
            assert Decimal(reply["balance"]) - Decimal(after["balance"]) >= 1  # a full step's use in 1 s
            if command["kind"] == "topup":
                assert Decimal(reply["last_topup_amount"]) == Decimal("100.50")
                topups = await eventually(lambda: events_of(api, "topup"))
                assert len(topups) == 1 and "100.50 KES" in topups[0]["detail"]
            await eventually(lambda: events_of(api, "command"))  # acknowledged, and stored after the balances
            assert [a["detail"] for a in await events_of(api, "anomaly")] == []

            # A real suspicious drain is still one: 300 KES gone within a minute.
            meter.balance -= 300
            await rounds(1)
            (anomaly,) = await eventually(lambda: events_of(api, "anomaly"))
            assert anomaly["detail"].startswith("suspicious balance: fell by 30")
        finally:
            await fleet.stop()


async def _count(api: httpx.AsyncClient, n: int) -> bool:
    return len(await stored_balances(api)) >= n
