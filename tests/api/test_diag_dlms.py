"""Diagnostics of DLMS meters (issue 17, item 9) over a running gateway and the DLMS simulator on
real TCP (ciphered, HLS-GMAC): each meter's state in /v1/diag/meters/{id} (last association, last
error, latency percentiles, last APDU in hex, never a key), poll-now, the read of one COSEM
attribute through /v1/diag (its bad input and its rate limit), and the status page listing the
DLMS meters with their protocol."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from gateway.runtime.config import GatewayConfig, cross_check
from gateway.runtime.gateway import Gateway
from simulators.dlms import DEFAULT_AK, DEFAULT_EK, DlmsFleet, FleetOptions, Secrets
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

ENERGY = {"obis": "1-0:1.8.0.255", "class_id": 3, "attribute": 2}


@asynccontextmanager
async def dlms_gateway(tmp_path: Path, *, faults: dict[str, frozenset[str]] | None = None,
                       diag: dict[str, Any] | None = None) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """A gateway polling two ciphered simulated DLMS meters (D-0002 with the keys `faults` give it)."""
    options = FleetOptions(meters=2, port=0, seed=5, speedup=0.0, secrets=Secrets(cipher=True), faults=faults or {})
    keys = tmp_path / "keys.toml"
    keys.write_text("".join(f'[meters."{m}"]\nauthentication_key = "{DEFAULT_AK.hex()}"\n'
                            f'encryption_key = "{DEFAULT_EK.hex()}"\n' for m in options.meter_ids()))
    os.chmod(keys, 0o600)
    async with DlmsFleet(options) as fleet:
        endpoints = [{"name": f"ep-{m}", "host": "127.0.0.1", "port": fleet.meters[m].port, "timeout": 2.0}
                     for m in options.meter_ids()]
        cfg = gateway_config(tmp_path / "gw", dlms={"key_file": str(keys), "state_dir": str(tmp_path / "dlms"),
                                                    "endpoints": endpoints, "breaker_failures": 100},
                             diag=diag or {"raw_reads_per_second": 50, "raw_read_burst": 50})
        doc: dict[str, Any] = cfg.model_dump(mode="json")
        doc["meters"] = [{"meter_id": m, "protocol": "dlms", "endpoint": f"ep-{m}", "client_sap": 1,
                          "authentication": "hls_gmac", "interval": 0.3, "align": False} for m in options.meter_ids()]
        cfg = GatewayConfig.model_validate(doc)
        assert not cross_check(cfg, {}, {})
        async with running_gateway(cfg) as (gw, api):
            yield gw, api


def _no_secrets(text: str) -> None:
    for key in (DEFAULT_AK, DEFAULT_EK):
        assert key.hex() not in text.lower() and key.hex().upper() not in text


async def test_a_dlms_meters_state_in_diagnostics_after_polls(tmp_path: Path) -> None:
    async with dlms_gateway(tmp_path, faults={"D-0002": frozenset({"wrong_key"})}) as (_, api):
        async def polled() -> dict[str, Any] | None:
            got = (await api.get("/v1/diag/meters/D-0001")).json()
            return got if got["polls"] >= 2 and got["protocol_detail"]["latency_p50_s"] is not None else None

        good = await eventually(polled)
        detail = good["protocol_detail"]
        assert good["protocol"] == "dlms" and good["state"] == "ok"
        assert (detail["protocol"], detail["authentication"], detail["ciphered"]) == ("dlms", "hls_gmac", True)
        assert detail["last_association"] is not None and detail["associations"] >= 1
        assert detail["latency_p50_s"] <= detail["latency_p90_s"] <= detail["latency_p99_s"]
        assert detail["last_error"] is None
        # The last APDU the meter sent, as it came: a ciphered get-response (glo-get-response, tag 0xCC,
        # or general-glo-ciphering 0xDB), never its plaintext and never the release's answer.
        apdu = bytes.fromhex(detail["last_apdu"])
        assert apdu[0] in (0xCC, 0xDB) and detail["last_apdu_bytes"] >= len(apdu)

        async def refused() -> dict[str, Any] | None:
            got = (await api.get("/v1/diag/meters/D-0002")).json()
            return got if got["protocol_detail"]["last_error"] else None

        bad = (await eventually(refused))["protocol_detail"]
        assert bad["last_error"].endswith("association refused: authentication failure")
        assert bad["last_error_kind"] == "association" and bad["last_association"] is None
        _no_secrets((await api.get("/v1/diag/meters/D-0001")).text + (await api.get("/v1/diag/meters/D-0002")).text)

        # Poll now: the meter's objects read at once and decoded through its map.
        now = await api.post("/v1/diag/meters/D-0001/poll")
        assert now.status_code == 200, now.text
        assert "energy_import" in {v["channel"] for v in now.json()["values"]}

        # The status page lists both with their protocol, and the selected one's DLMS state.
        panel = await api.get("/status/panel", params={"meter": "D-0001"})
        assert panel.status_code == 200
        assert panel.text.count('<span class="proto">dlms</span>') == 2
        assert 'id="last-association"' in panel.text and "hls_gmac, ciphered" in panel.text
        assert f'<code id="last-apdu">{detail["last_apdu"][:16]}' in panel.text
        _no_secrets(panel.text)


async def test_one_obis_attribute_read_through_diagnostics(tmp_path: Path) -> None:
    async with dlms_gateway(tmp_path) as (_, api):
        got = await api.post("/v1/diag/meters/D-0001/attribute", json=ENERGY)
        assert got.status_code == 200, got.text
        body = got.json()
        assert (body["meter_id"], body["endpoint"], body["obis"]) == ("D-0001", "ep-D-0001", "1-0:1.8.0")
        raw = bytes.fromhex(body["raw"])
        assert raw[0] in (5, 6, 20, 21) and isinstance(body["value"], int)  # a register's integer, as A-XDR
        assert body["unit"] in ("Wh", "kWh") and Decimal(body["scaled"]) > 0
        # The scaler applied exactly: the value's digits, the point moved (no float noise).
        exponent = Decimal(body["scaled"]).as_tuple().exponent
        assert isinstance(exponent, int) and Decimal(body["scaled"]).scaleb(-exponent) == body["value"]

        clock = (await api.post("/v1/diag/meters/D-0001/attribute",
                                json={"obis": "0-0:1.0.0.255", "class_id": 8, "attribute": 2})).json()
        assert clock["value"] == clock["raw"][4:] and len(clock["raw"]) == 28  # octet-string of 12: hex shown

        # A register's scaler_unit (attribute 3) is a structure: a list.
        su = (await api.post("/v1/diag/meters/D-0001/attribute", json={**ENERGY, "attribute": 3})).json()
        assert isinstance(su["value"], list) and len(su["value"]) == 2 and su["scaled"] is None

        # An object the meter does not have: the meter's answer, as a meter error (502), not a crash.
        missing = await api.post("/v1/diag/meters/D-0001/attribute",
                                 json={"obis": "1-0:99.99.9.255", "class_id": 3, "attribute": 2})
        assert missing.status_code == 502 and missing.json()["kind"] == "access"

        # Bad input: clear 4xx, the meter is not asked.
        cases = [({"obis": "1-0:1.8", "class_id": 3}, 422), ({"obis": "1-0:1.8.0.255", "class_id": 0}, 422),
                 ({"obis": "1-0:1.8.0.255", "class_id": 3, "attribute": 0}, 422),
                 ({**ENERGY, "key": "x"}, 422), ({"obis": "1-0:1.8.0.256", "class_id": 3}, 400),
                 ({"obis": "1-0:1.8.0.255", "class_id": 250}, 400),
                 ({"obis": "0-0:40.0.0.255", "class_id": 15, "attribute": 7}, 400)]
        for body_in, status in cases:
            bad = await api.post("/v1/diag/meters/D-0001/attribute", json=body_in)
            assert bad.status_code == status, (body_in, bad.text)
            assert "Traceback" not in bad.text
        secret = await api.post("/v1/diag/meters/D-0001/attribute",
                                json={"obis": "0-0:40.0.0.255", "class_id": 15, "attribute": 7})
        assert "secret" in secret.json()["message"]
        assert (await api.post("/v1/diag/meters/D-9999/attribute", json=ENERGY)).status_code == 404


async def test_attribute_reads_are_rate_limited_per_endpoint(tmp_path: Path) -> None:
    async with dlms_gateway(tmp_path, diag={"raw_reads_per_second": 0.05, "raw_read_burst": 2}) as (gw, api):
        first = await api.post("/v1/diag/meters/D-0001/attribute", json=ENERGY)
        second = await api.post("/v1/diag/meters/D-0001/poll")  # the same endpoint, the same bucket
        third = await api.post("/v1/diag/meters/D-0001/attribute", json=ENERGY)
        other = await api.post("/v1/diag/meters/D-0002/attribute", json=ENERGY)  # another endpoint
        assert (first.status_code, second.status_code, third.status_code, other.status_code) == (200, 200, 429, 200)
        assert third.json()["error"] == "rate_limited" and "endpoint ep-D-0001" in third.json()["message"]
        assert 1 <= int(third.headers["Retry-After"]) <= 21
        # The schedule is not limited: the meter goes on being polled.
        polls = gw.diag.driver_health()["D-0001"].polls
        await eventually(lambda: gw.diag.driver_health()["D-0001"].polls > polls)
