"""PAYG commands to DLMS meters (issue #17 item 6): `POST /v1/meters/{id}/commands` disconnect and
reconnect on a running gateway drive Disconnect control (class 70: ACTION remote_disconnect /
remote_reconnect, then output_state and control_state read back) over real TCP, against our
simulator and against Gurux's server (a DLMS server we did not write, in its own process); a token
(kind token) is entered at the Token gateway (class 115) once, and a reused one is refused; the
credit (Credit class 112 in the Account's currency, class 111) is read as a PAYG balance; every
command is in the commands table with its outcome."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from gateway.runtime.config import GatewayConfig, cross_check
from simulators.dlms import DlmsFleet, FleetOptions
from simulators.dlms.meter import make_token
from tests.fixtures.dlms_peer import DlmsPeer
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


def _config(tmp_path: Path, host: str, port: int, *, client: int, auth: str, password: str | None,
            server: int = 1) -> GatewayConfig:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[meters."D-0001"]\npassword = "{password}"\n' if password else "")
    os.chmod(keys, 0o600)
    cfg = gateway_config(tmp_path / "gw", dlms={"key_file": str(keys), "state_dir": str(tmp_path / "dlms"),
                                                "endpoints": [{"name": "ep", "host": host, "port": port,
                                                               "timeout": 5}]})
    doc: dict[str, Any] = cfg.model_dump(mode="json")
    doc["meters"] = [{"meter_id": "D-0001", "protocol": "dlms", "endpoint": "ep", "payg": True, "client_sap": client,
                      "server_logical": server, "authentication": auth, "interval": 86_400}]
    cfg = GatewayConfig.model_validate(doc)
    assert not cross_check(cfg, {}, {}), cross_check(cfg, {}, {})
    return cfg


async def _command(api: httpx.AsyncClient, kind: str, **body: str) -> dict[str, Any]:
    resp = await api.post("/v1/meters/D-0001/commands", json={"kind": kind, **body})
    assert resp.status_code == 202, resp.text
    sent = resp.json()
    assert sent["status"] == "pending"

    async def settled() -> dict[str, Any] | None:
        got = (await api.get(f"/v1/commands/{sent['correlation_id']}")).json()
        return got if got["status"] != "pending" else None

    result: dict[str, Any] = await eventually(settled)
    return result


async def test_disconnect_and_reconnect_round_trip_through_the_api_on_the_simulator(tmp_path: Path) -> None:
    options = FleetOptions(meters=1, port=0, seed=5, speedup=0.0)
    async with DlmsFleet(options) as fleet:
        meter = fleet.meters["D-0001"]
        cfg = _config(tmp_path, "127.0.0.1", meter.port, client=1, auth="low", password="12345678")
        async with running_gateway(cfg) as (_gw, api):
            off = await _command(api, "disconnect")
            relay_after_off = meter.state.output_connected()
            on = await _command(api, "reconnect")
            relay_after_on = meter.state.output_connected()
            audit = (await api.get("/v1/meters/D-0001/commands")).json()["items"]
            topup = await api.post("/v1/meters/D-0001/commands", json={"kind": "topup", "amount": "10.00"})
    assert off["status"] == "acknowledged", off
    assert "output_state disconnected, control_state disconnected" in off["detail"]
    assert relay_after_off is False
    assert on["status"] == "acknowledged", on
    assert "output_state connected, control_state connected" in on["detail"]
    assert relay_after_on is True
    assert [(c["kind"], c["status"]) for c in audit] == [("reconnect", "acknowledged"), ("disconnect", "acknowledged")]
    assert topup.status_code == 400 and "a top-up is a token" in topup.text


async def test_a_meter_that_refuses_the_action_fails_the_command(tmp_path: Path) -> None:
    # The public client may read but not act (the simulator denies it): the command fails, with why.
    options = FleetOptions(meters=1, port=0, seed=5, speedup=0.0)
    async with DlmsFleet(options) as fleet:
        meter = fleet.meters["D-0001"]
        cfg = _config(tmp_path, "127.0.0.1", meter.port, client=16, auth="lowest", password=None)
        async with running_gateway(cfg) as (_gw, api):
            off = await _command(api, "disconnect")
    assert off["status"] == "failed"
    assert "remote_disconnect refused by the meter: read write denied" in off["detail"]
    assert meter.state.output_connected() is True


async def test_disconnect_and_reconnect_against_gurux(tmp_path: Path, dlms_peer_low: DlmsPeer) -> None:
    s = dlms_peer_low.settings
    cfg = _config(tmp_path, dlms_peer_low.host, dlms_peer_low.port, client=s.client_address, auth="low",
                  password=s.password, server=s.server_address)
    async with running_gateway(cfg) as (_gw, api):
        off = await _command(api, "disconnect")
        on = await _command(api, "reconnect")
    assert off["status"] == "acknowledged", off
    assert "output_state disconnected" in off["detail"]
    assert on["status"] == "acknowledged", on
    assert "output_state connected" in on["detail"]


async def test_a_token_is_entered_once_and_a_reused_token_is_refused_with_its_result_recorded(tmp_path: Path) -> None:
    options = FleetOptions(meters=1, port=0, seed=5, speedup=0.0)
    token = make_token(50_000, 12_345)  # KES 500.00, as the vendor would sell it
    async with DlmsFleet(options) as fleet:
        meter = fleet.meters["D-0001"]
        credit_before = meter.state.credit()
        cfg = _config(tmp_path, "127.0.0.1", meter.port, client=1, auth="low", password="12345678")
        async with running_gateway(cfg) as (_gw, api):
            first = await _command(api, "token", token=token)
            credit_after = meter.state.credit()

            async def balance_now() -> dict[str, Any] | None:
                resp = await api.get("/v1/meters/D-0001/balance")
                got: dict[str, Any] = resp.json()
                return got if resp.status_code == 200 and Decimal(str(got["balance"])) * 100 == credit_after else None

            # The credit read in the token's association, as a PAYG balance (Account currency KES, scale -2).
            balance = await eventually(balance_now)
            again = await _command(api, "token", token=token)
            audit = (await api.get("/v1/meters/D-0001/commands")).json()["items"]
            letters = await api.post("/v1/meters/D-0001/commands", json={"kind": "token", "token": "1234-5678"})
            missing = await api.post("/v1/meters/D-0001/commands", json={"kind": "token"})
    assert first["status"] == "acknowledged" and first["detail"] == f"token {token}: executed"
    assert credit_after - credit_before == 50_000
    assert again["status"] == "failed" and again["detail"].startswith(f"token {token}: validation failure")
    assert [(c["kind"], c["status"], c["detail"]) for c in audit] == [
        ("token", "failed", again["detail"]), ("token", "acknowledged", first["detail"])]
    assert letters.status_code == 422 and missing.status_code == 422
    assert balance["currency"] == "KES" and balance["relay"] == "connected"
    assert Decimal(str(balance["balance"])) == Decimal(credit_after).scaleb(-2)  # exactly, cents as the meter counts
