"""The DLMS simulator read by Gurux's client (GPL-2.0), run as a separate process
(tests/peers/gurux_dlms_client.py prints JSON): a second client we did not write, with its own codec."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from simulators.dlms import DEFAULT_AK, DEFAULT_EK, DlmsFleet, FleetOptions, Secrets
from simulators.dlms.model import INTERVAL_S

SCRIPT = Path(__file__).resolve().parents[1] / "peers" / "gurux_dlms_client.py"


async def gurux(port: int, auth: str, **extra: Any) -> dict[str, Any]:
    cfg = {"host": "127.0.0.1", "port": port, "auth": auth, "password": "12345678", "ek": DEFAULT_EK.hex(),
           "ak": DEFAULT_AK.hex(), "invocation_counter": 1, "system_title": b"GXCLIENT".hex(), "days": 1, **extra}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(SCRIPT), json.dumps(cfg),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])  # Gurux prints lines of its own
    return result


@pytest.fixture
async def fleet() -> AsyncIterator[DlmsFleet]:
    async with DlmsFleet(FleetOptions(meters=1, port=0, seed=9, speedup=0.0)) as f:
        yield f


def check_against_model(fleet: DlmsFleet, got: dict[str, Any]) -> None:
    """What Gurux decoded equals what the simulator's model holds (time stands still: speedup 0)."""
    state = fleet.meters["D-0001"].state
    now = fleet.now()
    value, scaler, unit = got["energy"]
    assert Decimal(value) * Decimal(str(scaler)) == Decimal(state.consumption.energy_import(now)) and unit == 30
    assert got["voltage"][1:] == [0.1, 35] and 225 <= got["voltage"][0] <= 235
    assert abs((dt.datetime.fromisoformat(got["clock"]) - now).total_seconds()) < 1
    assert got["ldn"] == "SIM0000000000001"
    rows = got["profile"]
    assert len(rows) == 96
    origin = state.consumption.origin
    for stamp, status, energy in rows:
        k = int((dt.datetime.fromisoformat(stamp) - origin).total_seconds()) // INTERVAL_S
        assert (status, energy) == (0, state.consumption.profile_energy(k))


async def test_gurux_reads_the_plain_meter(fleet: DlmsFleet) -> None:
    got = await gurux(fleet.meters["D-0001"].port, "none")
    assert got["associated"] is True
    check_against_model(fleet, got)


async def test_gurux_lls_disconnects_and_reconnects(fleet: DlmsFleet) -> None:
    got = await gurux(fleet.meters["D-0001"].port, "low")
    assert got["relay"] == [[False, 0], [True, 1]]
    assert (await gurux(fleet.meters["D-0001"].port, "low", password="wrong"))["associated"] is False


async def test_gurux_hls_gmac_ciphered_and_a_wrong_key() -> None:
    options = FleetOptions(meters=1, port=0, seed=9, speedup=0.0, secrets=Secrets(cipher=True))
    async with DlmsFleet(options) as fleet:
        port = fleet.meters["D-0001"].port
        got = await gurux(port, "gmac")
        check_against_model(fleet, got)
        assert got["relay"] == [[False, 0], [True, 1]]
        counter = fleet.meters["D-0001"].state.client_ic_seen + 1
        refused = await gurux(port, "gmac", ek="00" * 16, invocation_counter=counter)
        assert refused["associated"] is False
        again = await gurux(port, "gmac", invocation_counter=counter)
        assert again["associated"] is True
