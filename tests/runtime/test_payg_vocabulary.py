"""Another vendor's PAYG vocabulary end to end (issue 16, item 2): balance messages whose relay says
"closed" / "open" and whose money is in cents, sent by the Mosquitto command-line client (not our
publisher) through a real broker into a running gateway with `value_maps` and `scales`."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import Broker
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
N = 100


async def mosquitto_pub(broker: Broker, topic: str, lines: list[str]) -> None:
    """One message per line (`-l`), QoS 1, by the broker project's own client."""
    exe = shutil.which("mosquitto_pub")
    if exe is None:
        pytest.fail("mosquitto_pub is missing: bootstrap.sh test installs mosquitto-clients")
    proc = await asyncio.create_subprocess_exec(exe, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic,
                                                "-l", stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(("\n".join(lines) + "\n").encode())
    assert proc.returncode == 0, err.decode()


async def test_relay_words_and_cents_of_another_vendor_are_all_stored(tmp_path: Path, mqtt_broker: Broker) -> None:
    cfg = gateway_config(tmp_path / "gw", broker_port=mqtt_broker.port, payg_ids=["P-0001"],
                         mqtt={"value_maps": {"relay": {"closed": "connected", "open": "disconnected"}},
                               "scales": {"balance": Decimal("0.01")}})
    sent = [{"ts": (T0 + timedelta(minutes=i)).isoformat(), "balance": 10_000 - 37 * i, "currency": "KES",
             "relay": "Closed" if i % 10 else "open"} for i in range(N)]
    async with running_gateway(cfg) as (_, api):
        await mosquitto_pub(mqtt_broker, "payg/P-0001/balance", [json.dumps(m) for m in sent]
                            + [json.dumps({"ts": T0.isoformat(), "balance": 1, "relay": "ajar"})])
        window = {"from": (T0 - timedelta(minutes=1)).isoformat(), "to": (T0 + timedelta(hours=2)).isoformat()}

        async def stored() -> list[dict[str, Any]]:
            r = await api.get("/v1/meters/P-0001/balances", params=window)
            items: list[dict[str, Any]] = r.json()["items"] if r.status_code == 200 else []
            return items if len(items) == N else []

        async def dead() -> list[dict[str, Any]]:
            r = await api.get("/v1/diag/deadletters", params={"meter_id": "P-0001"})
            return r.json()["items"] if r.status_code == 200 else []

        items = await eventually(stored)
        assert [Decimal(str(b["balance"])) for b in items] == [Decimal(m["balance"]) / 100 for m in sent]
        assert [b["relay"] for b in items] == ["connected" if i % 10 else "disconnected" for i in range(N)]
        letters = await eventually(dead)
        # Only the message with a word the map lacks, which says the word and the map's keys.
        assert [(d["reason"], d["detail"]) for d in letters] == [(
            "unmapped_value",
            "topic payg/P-0001/balance: field 'relay' 'ajar' is not in its value map "
            "(mqtt value_maps.relay: 'closed', 'open')")]
