"""The DLMS driver against our own simulator's fleet (simulators/dlms/, ciphered, HLS-GMAC): a
good meter polls on beside a meter with other keys (association refused: authentication failure),
one that answers garbage (dead letters in hex), one that never answers (timeouts) and one whose
clock drifts (its readings stamped ahead, for VEE). The independent check of the same client is
tests/drivers/test_dlms_driver.py against Gurux's server."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from drivers.base import BuildContext
from drivers.dlms.spec import build
from gateway.config.sections import bindings
from gateway.model import DeadLetter
from gateway.model.samples import PollFailure, RawObjects, Sample
from gateway.runtime.config import GatewayConfig, cross_check
from simulators.dlms import DEFAULT_AK, DEFAULT_EK, DlmsFleet, FleetOptions, Secrets
from tests.fixtures.gateway import eventually, gateway_config


async def test_a_ciphered_fleet_with_faulty_meters(tmp_path: Path) -> None:
    faults = {"D-0002": frozenset({"wrong_key"}), "D-0003": frozenset({"garbage"}),
              "D-0004": frozenset({"timeout"}), "D-0005": frozenset({"drift"})}
    options = FleetOptions(meters=5, port=0, seed=3, speedup=0.0, secrets=Secrets(cipher=True), faults=faults)
    keys = tmp_path / "keys.toml"
    keys.write_text("".join(f'[meters."{m}"]\nauthentication_key = "{DEFAULT_AK.hex()}"\n'
                            f'encryption_key = "{DEFAULT_EK.hex()}"\n' for m in options.meter_ids()))
    os.chmod(keys, 0o600)
    async with DlmsFleet(options) as fleet:
        endpoints = [{"name": m, "host": "127.0.0.1", "port": fleet.meters[m].port, "timeout": 0.5}
                     for m in options.meter_ids()]
        cfg = gateway_config(tmp_path / "gw", dlms={"key_file": str(keys), "state_dir": str(tmp_path / "dlms"),
                                                    "endpoints": endpoints, "breaker_failures": 100})
        doc: dict[str, Any] = cfg.model_dump(mode="json")
        doc["meters"] = [{"meter_id": m, "protocol": "dlms", "endpoint": m, "client_sap": 1,
                          "authentication": "hls_gmac", "interval": 0.3, "align": False} for m in options.meter_ids()]
        cfg = GatewayConfig.model_validate(doc)
        assert not cross_check(cfg, {}, {})
        got: list[Sample] = []

        async def emit(sample: Sample) -> None:
            got.append(sample)

        pollers = build(BuildContext(settings=cfg.section("dlms"), meters=bindings(cfg), profiles={}, emit=emit,
                                     gateway_id="test"))

        def failed(meter: str) -> list[PollFailure]:
            return [s for s in got if isinstance(s, PollFailure) and s.meter_id == meter]

        def raws(meter: str) -> list[RawObjects]:
            return [s for s in got if isinstance(s, RawObjects) and s.meter_id == meter]

        tasks = [asyncio.create_task(p.run()) for p in pollers]
        try:
            await eventually(lambda: len(raws("D-0001")) >= 3 and len(raws("D-0005")) >= 1
                             and all(failed(m) for m in ("D-0002", "D-0003", "D-0004")))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert not failed("D-0001") and not failed("D-0005")
    assert {f.error.kind for f in failed("D-0002")} == {"association"}
    assert str(failed("D-0002")[0].error).endswith("association refused: authentication failure")
    assert {f.error.kind for f in failed("D-0004")} <= {"timeout"}
    assert {f.error.kind for f in failed("D-0003")} <= {"frame", "access"}
    dead = [s for s in got if isinstance(s, DeadLetter) and s.meter_id == "D-0003"]
    assert dead and all(d.source == "dlms" and bytes.fromhex(d.payload) is not None for d in dead if d.payload)
    values = {code for code, _, _ in raws("D-0001")[-1].values}
    assert {"1-0:1.8.0", "1-0:2.8.0", "1-0:1.8.1", "1-0:32.7.0", "1-0:14.7.0"} <= values
    drift = raws("D-0005")[0]
    assert drift.ts - drift.received_at > timedelta(minutes=7)  # its clock runs 7 min 30 s ahead
