"""The `wmbusmeters` payload preset through a real gateway and a real Mosquitto: wmbusmeters-shaped
JSON (field names as wmbusmeters' drivers multical21, sharky774 and waterstarm write them) becomes
readings with the printed decimals, due-day values at their own date, status words become events
(leak, burst, dry, tamper, battery low: none dropped) and tamper flags the readings; garbage and
unknown meters are dead letters while the good meters go on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.runtime.config import GatewayConfig, parse_config
from simulators.broker import Broker
from simulators.mbus.wmbusmeters import WmbusMeter, publish
from simulators.mqtt.publisher import PaygPublisher
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


def config(tmp_path: Path, broker: Broker) -> GatewayConfig:
    base = gateway_config(tmp_path / "gw", broker_port=broker.port)
    doc = base.model_dump(mode="json")
    doc["mqtt"]["sources"] = [{"topic": "wmbusmeters/{meter_id}", "payload_format": "wmbusmeters"}]
    doc["meters"] = [
        {"meter_id": "MyTapWater", "protocol": "mqtt", "utility": "water", "wmbus_map": "wmbusmeters"},
        {"meter_id": "Heato", "protocol": "mqtt", "utility": "heat", "wmbus_map": "wmbusmeters"},
    ]
    return GatewayConfig.model_validate(doc)


async def test_wmbusmeters_json_over_mosquitto_into_the_store(tmp_path: Path, mqtt_broker: Broker) -> None:
    water = WmbusMeter("MyTapWater", "76348799", total=Decimal("6.408"))
    heat = WmbusMeter("Heato", "58496405", kind="heat", total=Decimal("6884"))
    at = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    async with running_gateway(config(tmp_path, mqtt_broker)) as (gw, api), \
            PaygPublisher(mqtt_broker.host, mqtt_broker.port) as pub:
        await gw.store_ready.wait()
        # Subscribed before anything is published: wmbusmeters' QoS 0/1 messages are not kept for us.
        await eventually(lambda: _ready(api))

        async def readings(meter: str, channel: str) -> list[dict[str, Any]]:
            resp = await api.get(f"/v1/meters/{meter}/readings", params={"channel": channel, "from": "2026-01-01T00:00:00Z"})
            return list(resp.json()["items"]) if resp.status_code == 200 else []

        async def events(meter: str) -> list[dict[str, Any]]:
            return list((await api.get("/v1/diag/events", params={"meter_id": meter, "limit": 100})).json()["items"])

        await publish(pub, water, at)
        await publish(pub, heat, at)
        volume = await eventually(lambda: readings("MyTapWater", "volume"))
        energy = await eventually(lambda: readings("Heato", "heat_energy"))
        water.status = "LEAK"
        await publish(pub, water, at.replace(minute=15))
        water.status = "TAMPER POWER_LOW"
        await publish(pub, water, at.replace(minute=30))
        await pub.publish("wmbusmeters/MyTapWater", b"\x00not json")
        await publish(pub, WmbusMeter("Stranger", "1"), at)
        water.status, water.extra = "DRY", {"time_dry": "22-31 days"}
        await publish(pub, water, at.replace(minute=45))
        got = await eventually(lambda: _dry(events, "MyTapWater"))
        volume = await eventually(lambda: _n(readings("MyTapWater", "volume"), 5))
        letters = (await api.get("/v1/diag/deadletters", params={"limit": 100})).json()["items"]
        temps = await readings("Heato", "temperature_return")
    values = {(r["ts"], r["value"]) for r in volume}
    assert ("2026-12-07T18:00:00Z", 6.408) in values or ("2026-12-07T18:00:00+00:00", 6.408) in values
    assert any(v == 120.001 and ts.startswith("2026-11-30") for ts, v in values)  # target_m3 at target_date
    assert {r["value"] for r in energy} >= {6884.0, 6347.0}
    assert any(r["ts"].startswith("2026-05-31") and r["value"] == 6347.0 for r in energy)
    assert {r["value"] for r in temps} == {27.6}
    details = " | ".join(e["detail"] for e in got)
    for word in ("leak", "tamper", "battery low", "dry (22-31 days)", "LEAK cleared"):
        assert word in details, details
    assert any(e["kind"] == "tamper" for e in got)
    tampered = [r for r in volume if r["ts"].startswith("2026-12-07T18:30")]
    assert tampered and all("tamper" in r["quality"] for r in tampered), tampered
    reasons = {(d["reason"], d.get("meter_id")) for d in letters}
    assert ("malformed_json", "MyTapWater") in reasons
    assert any(reason == "unknown_meter" and d["payload"].find("Stranger") >= 0
               for d in letters for reason in [d["reason"]])


async def _ready(api: Any) -> bool:
    checks = (await api.get("/readyz")).json().get("checks", {})
    return bool(checks.get("broker", {}).get("ok"))


async def _dry(events: Any, meter: str) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = await events(meter)
    return items if any("dry" in e["detail"] for e in items) else None


async def _n(probe: Any, n: int) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = await probe
    return items if len(items) >= n else None


def test_a_wmbusmeters_meter_needs_a_known_map_and_a_wmbusmeters_topic() -> None:
    text = """
[mqtt]
enabled = true

[[meters]]
meter_id = "W"
protocol = "mqtt"
wmbus_map = "nope"
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", env={})
    assert any("meters[0].wmbus_map" in str(p) and "unknown object map" in str(p) for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace('"nope"', '"wmbusmeters"'), "t.toml", env={})
    assert any("payload_format 'wmbusmeters'" in str(p) for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace('"nope"', '"wmbusmeters"\npayg = true'), "t.toml", env={})
    assert any("meters[0].payg" in str(p) and "contradicts" in str(p) for p in info.value.problems)


def test_due_day_values_are_read_once_per_change() -> None:
    """wmbusmeters repeats target_m3 in every telegram: one reading at target_date, until it changes."""
    from drivers.mbus.maps import object_maps
    from gateway.model import Source
    from gateway.model.samples import RawPayload
    from gateway.normalise.objects import ObjectReader
    from gateway.normalise.wmbusmeters import WmbusmetersReader
    from simulators.mqtt.publisher import to_json

    meter = WmbusMeter("W", "1", total=Decimal("6.408"))
    reader, objects = WmbusmetersReader(), ObjectReader(object_maps()["wmbusmeters"], Source.MQTT)
    at = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)

    def dated(doc_at: datetime) -> list[float]:
        raw = RawPayload("wmbusmeters/W", to_json(meter.doc(doc_at)).encode(), doc_at, "W")
        return [r.value for r in reader.read(raw, objects).readings if r.ts.date().isoformat() == "2026-11-30"]

    assert dated(at) == [120.001]
    assert dated(at.replace(minute=1)) == []
    meter.extra = {"target_m3": Decimal("121.5")}
    assert dated(at.replace(minute=2)) == [121.5]
