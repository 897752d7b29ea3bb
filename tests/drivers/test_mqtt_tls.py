"""TLS (CA file, client certificate) and username/password against a real Mosquitto that serves TLS
only, wants a client certificate from the test CA and a password (certificates from openssl)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.mqtt import MqttSettings, MqttSubscriber
from drivers.samples import RawPayload
from simulators.broker import Broker
from simulators.mqtt import TlsFiles, publish_balance
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.mosquitto import MQTT_PASSWORD, MQTT_USER, Pki


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("paho")]
    assert not left, f"paho threads left running: {left}"


def tls_settings(broker: Broker, pki: Pki, **kw: Any) -> MqttSettings:
    values: dict[str, Any] = {"host": broker.host, "port": broker.port, "client_id": "gw-tls",
                              "username": MQTT_USER, "password": MQTT_PASSWORD, "tls_ca": str(pki.ca),
                              "tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key),
                              "reconnect_min": 0.05, "reconnect_max": 0.3, **kw}
    return MqttSettings(**values)


def meter_tls(pki: Pki) -> TlsFiles:
    return TlsFiles(str(pki.ca), str(pki.client_cert), str(pki.client_key))


@asynccontextmanager
async def running(sub: MqttSubscriber) -> AsyncIterator[MqttSubscriber]:
    task = asyncio.create_task(sub.run())
    try:
        yield sub
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_tls_client_certificate_and_password(mqtt_tls_broker: Broker, pki: Pki) -> None:
    got: list[RawPayload] = []

    async def emit(raw: RawPayload) -> None:
        got.append(raw)
        assert raw.ack is not None
        raw.ack()

    sub = MqttSubscriber(tls_settings(mqtt_tls_broker, pki), ["payg/{meter_id}/balance"], emit)
    async with running(sub):
        await sub.wait_connected(10)
        await publish_balance(mqtt_tls_broker.host, mqtt_tls_broker.port, "P-1", b"9.99",
                              username=MQTT_USER, password=MQTT_PASSWORD, tls=meter_tls(pki))
        await eventually(lambda: got)
    assert got[0].payload == b"9.99" and got[0].meter_id == "P-1"
    assert mqtt_tls_broker.url.startswith("mqtts://")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"password": "wrong"}, "Not authorized"),
        ({"username": None, "password": None}, "Not authorized"),
        ({"tls_cert": "rogue", "tls_key": "rogue"}, "failed"),  # a certificate from another CA
        ({"tls_cert": None, "tls_key": None}, "failed"),  # no client certificate
        ({"tls_ca": None, "tls_cert": None, "tls_key": None}, "failed"),  # plain MQTT to a TLS port
    ],
)
async def test_refused_without_the_right_credentials(mqtt_tls_broker: Broker, pki: Pki,
                                                     change: dict[str, Any], error: str) -> None:
    if change.get("tls_cert") == "rogue":
        change = {"tls_cert": str(pki.rogue_cert), "tls_key": str(pki.rogue_key)}
    sub = MqttSubscriber(tls_settings(mqtt_tls_broker, pki, **change), ["payg/{meter_id}/balance"],
                         lambda raw: asyncio.sleep(0))
    async with running(sub):
        await eventually(lambda: sub.health()["connect_failures"] >= 2)
        assert not sub.connected
        assert error in (sub.health()["last_error"] or ""), sub.health()["last_error"]


async def test_gateway_config_reaches_a_tls_broker(tmp_path: Path, mqtt_tls_broker: Broker, pki: Pki) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_tls_broker.port, payg_ids=["P-0001"],
                         mqtt={"username": MQTT_USER, "password": MQTT_PASSWORD, "tls_ca": str(pki.ca),
                               "tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)})
    async with running_gateway(cfg) as (gw, _):
        assert gw.subscriber is not None
        await gw.subscriber.wait_connected(30)
        await publish_balance(mqtt_tls_broker.host, mqtt_tls_broker.port, "P-0001",
                              {"ts": "2026-01-01T00:00:00Z", "balance": "3.50"},
                              username=MQTT_USER, password=MQTT_PASSWORD, tls=meter_tls(pki))

        async def balance() -> Any:
            assert gw.store is not None
            return await gw.store.latest_balance("P-0001")

        assert (await eventually(balance)).balance == Decimal("3.50")
