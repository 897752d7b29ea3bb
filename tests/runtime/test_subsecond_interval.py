"""Issue 26 item 5: a sub-second poll interval keeps its resolution. A meter polled every 200 ms gives five
readings a second per channel, each stamped with its own boundary (to the microsecond), stored as such and
served as such by the API and the feed, on both stores."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config.profiles import load_profiles
from simulators.modbus import SimFleet
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


@pytest.fixture(params=["sqlite", "timescale"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "timescale":
        return "timescale", request.getfixturevalue("timescale_dsn")
    return "sqlite", None


def _us(ts: str) -> int:
    t = datetime.fromisoformat(ts)
    return round(t.timestamp() * 1_000_000)


async def test_a_200_ms_interval_gives_five_timestamps_a_second_stored_and_served(
        tmp_path: Path, backend: tuple[str, str | None]) -> None:
    name, dsn = backend
    async with SimFleet(load_profiles()["generic"], 1, seed=3) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=1, backend=name, dsn=dsn, interval=0.2)
        async with running_gateway(cfg) as (_, api):

            async def power() -> list[dict[str, Any]]:
                resp = await api.get("/v1/meters/M-0001/readings", params={"channel": "power", "limit": 1000})
                items: list[dict[str, Any]] = resp.json()["items"] if resp.status_code == 200 else []
                return items if len(items) >= 25 else []

            rows = await eventually(power)
            feed = (await api.get("/v1/readings/feed", params={"limit": 10_000})).json()["items"]

    stamps = [_us(r["ts"]) for r in rows]
    assert len(set(stamps)) == len(stamps), "two readings of one channel share a timestamp"
    assert all(s % 200_000 == 0 for s in stamps), stamps  # each on its own 200 ms boundary
    per_second: dict[int, int] = {}
    for s in stamps:
        per_second[s // 1_000_000] = per_second.get(s // 1_000_000, 0) + 1
    # A second polled whole (not the first nor the last, which the window may cut) has all five.
    assert 5 in per_second.values(), per_second
    assert all(n <= 5 for n in per_second.values()), per_second
    fed = sorted(_us(r["ts"]) for r in feed if r["meter_id"] == "M-0001" and r["channel"] == "power")
    assert set(stamps) <= set(fed), "the feed serves the same sub-second timestamps"
