"""Broker reconnect back-off (issue 22 item 10): `[mqtt] reconnect_min_delay` / `reconnect_max_delay`,
default at most 5 s between attempts, jittered; a gateway finds a returning broker within that."""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path

import pytest

from drivers.mqtt import MqttSettings
from drivers.mqtt.connection import RECONNECT_JITTER
from drivers.mqtt.settings import MqttSection
from gateway.errors import ConfigError
from gateway.runtime.config import parse_config
from simulators.broker import Broker
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

#: What the issue asks for: by default, at most 5 s between attempts.
REQUIRED_MAX_DELAY = 5.0
#: Time allowed for the connect itself once the attempt starts: TCP connect in a worker thread,
#: CONNACK, SUBSCRIBE / SUBACK, and the event loop getting to it on a loaded 2-core machine.
#: Measured here: 0.01-0.05 s; 2 s so that a busy machine does not make the test flaky.
CONNECT_ALLOWANCE = 2.0


def test_defaults_are_at_most_5_s_and_the_config_carries_them() -> None:
    assert (MqttSection().reconnect_min_delay, MqttSection().reconnect_max_delay) == (0.5, REQUIRED_MAX_DELAY)
    assert (MqttSettings().reconnect_min, MqttSettings().reconnect_max) == (0.5, REQUIRED_MAX_DELAY)
    cfg, _ = parse_config("[mqtt]\nreconnect_min_delay = 0.2\nreconnect_max_delay = 2.5\n", "t.toml", env={})
    assert (cfg.mqtt.reconnect_min_delay, cfg.mqtt.reconnect_max_delay) == (0.2, 2.5)


@pytest.mark.parametrize(("text", "expected"), [
    ("[mqtt]\nreconnect_min_delay = 3\nreconnect_max_delay = 2\n",
     "mqtt.reconnect_min_delay at line 2: 3 s exceeds reconnect_max_delay 2 s"),
    ("[mqtt]\nreconnect_max_delay = 0\n",
     "mqtt.reconnect_max_delay at line 2: Input should be greater than 0 (got 0)"),
])
def test_bad_delays_are_config_errors_with_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", env={})
    assert [str(p) for p in info.value.problems] == [expected]


@pytest.mark.parametrize(("low", "high"), [(0.5, 5.0), (0.2, 2.5), (1.0, 1.0), (0.05, 30.0)])
def test_the_schedule_doubles_stays_within_its_jitter_and_never_exceeds_the_max(low: float, high: float) -> None:
    settings = MqttSettings(reconnect_min=low, reconnect_max=high)
    for seed in range(200):
        backoff = settings.reconnect_backoff(random.Random(seed))
        for _round in range(2):  # a success resets it to the start
            for attempt in range(12):
                nominal = min(low * 2**attempt, high)
                delay = backoff.next()
                assert delay <= high, (seed, attempt, delay)
                assert nominal * (1 - RECONNECT_JITTER) <= delay <= min(high, nominal * (1 + RECONNECT_JITTER)), (
                    seed, attempt, delay)
            backoff.reset()
    # The jitter is used, not only allowed: delays below the cap spread over both sides.
    delays = [MqttSettings(reconnect_min=1.0, reconnect_max=8.0).reconnect_backoff(random.Random(s)).next()
              for s in range(200)]
    assert min(delays) < 0.95 and max(delays) > 1.05


async def test_reconnects_within_the_max_delay_of_the_brokers_return(tmp_path: Path, mqtt_broker: Broker) -> None:
    """The broker stays away until the gateway's back-off has reached its cap, then returns; the
    gateway (default [mqtt] settings) is connected and subscribed again within
    REQUIRED_MAX_DELAY x (1 + jitter) + CONNECT_ALLOWANCE of the broker accepting connections.
    Measured on a 2-core test machine: 4.52, 4.62 and 4.90 s in three runs with the 5 s default (a
    delay at the cap is 4.5-5 s); 29.98 s with the old 30 s cap (reconnect_max_delay = 30), which
    fails here."""
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-0001"])
    async with running_gateway(cfg, api_key=False) as (gw, _):
        sub = gw.subscriber
        assert sub is not None
        await sub.wait_connected(30)
        settings = sub.settings
        # Failed attempts after the lost connection until the next delay is at the cap:
        # min, 2 min, 4 min, ... < max.
        to_cap = max(0, math.ceil(math.log2(settings.reconnect_max / settings.reconnect_min)))
        failures = sub.health()["connect_failures"]

        await asyncio.to_thread(mqtt_broker.stop)
        await eventually(lambda: not sub.connected)
        await eventually(lambda: sub.health()["connect_failures"] >= failures + to_cap,
                         timeout=2 * settings.reconnect_max * to_cap + 10)

        def start() -> float:
            mqtt_broker.start()  # returns once the broker accepts TCP connections
            return time.monotonic()

        back = await asyncio.to_thread(start)
        bound = REQUIRED_MAX_DELAY * (1 + RECONNECT_JITTER) + CONNECT_ALLOWANCE
        await sub.wait_connected(bound + 30)  # wait longer than the bound, to report the gap it took
        gap = time.monotonic() - back

    assert gap <= bound, f"connected again {gap:.2f} s after the broker returned (allowed {bound:.2f} s)"
