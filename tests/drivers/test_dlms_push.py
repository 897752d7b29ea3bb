"""DLMS push (issue #17 item 5): our simulator's meters call the gateway's push listener over real TCP
with DataNotifications (ciphered general-glo under HLS, plain otherwise). A push is read like a poll
(same values, exactly) and stored by a running gateway; the sender is known by its system title or
logical device name; an unknown system title, garbage, a tampered or replayed push are dead letters
with the bytes in hex, and the listener goes on."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from drivers.base import BuildContext
from drivers.dlms.poller import DlmsPoller
from drivers.dlms.push import PushListener
from drivers.dlms.spec import build_all
from gateway.config.sections import bindings
from gateway.model import DeadLetter
from gateway.model.samples import RawObjects, Sample
from gateway.runtime.config import GatewayConfig, cross_check
from simulators.dlms import DEFAULT_AK, DEFAULT_EK, DlmsFleet, FleetOptions, Secrets
from simulators.dlms.fleet import wrap
from tests.fixtures.gateway import eventually, gateway_config, running_gateway
from tests.fixtures.ports import free_port

LDN_1 = "SIM0000000000001"


def _config(tmp_path: Path, fleet: DlmsFleet, push_port: int, *, cipher: bool, configured: tuple[str, ...] = ("D-0001",),
            interval: float = 86_400) -> GatewayConfig:
    keys = tmp_path / "keys.toml"
    keys.write_text("".join(f'[meters."{m}"]\nauthentication_key = "{DEFAULT_AK.hex()}"\n'
                            f'encryption_key = "{DEFAULT_EK.hex()}"\n' for m in configured))
    os.chmod(keys, 0o600)
    endpoints = [{"name": m, "host": "127.0.0.1", "port": fleet.meters[m].port, "timeout": 2} for m in configured]
    cfg = gateway_config(tmp_path / "gw", dlms={"key_file": str(keys), "state_dir": str(tmp_path / "dlms"),
                                                "endpoints": endpoints, "push_listen": f"127.0.0.1:{push_port}"})
    doc: dict[str, Any] = cfg.model_dump(mode="json")
    doc["meters"] = []
    for m in configured:
        n = int(m.split("-")[1])
        meter: dict[str, Any] = {"meter_id": m, "protocol": "dlms", "endpoint": m, "interval": interval,
                                 "system_title": (b"SIM" + n.to_bytes(5, "big")).hex(),
                                 "logical_device_name": f"SIM{n:013d}"}
        if cipher:
            meter |= {"client_sap": 1, "authentication": "hls_gmac"}
        doc["meters"].append(meter)
    cfg = GatewayConfig.model_validate(doc)
    assert not cross_check(cfg, {}, {}), cross_check(cfg, {}, {})
    return cfg


@asynccontextmanager
async def listening(cfg: GatewayConfig) -> AsyncIterator[tuple[PushListener, DlmsPoller, list[Sample]]]:
    got: list[Sample] = []

    async def emit(sample: Sample) -> None:
        got.append(sample)

    drivers = build_all(BuildContext(settings=cfg.section("dlms"), meters=bindings(cfg), profiles={}, emit=emit,
                                 gateway_id="test"))
    listener = next(d for d in drivers if isinstance(d, PushListener))
    poller = next(d for d in drivers if isinstance(d, DlmsPoller))
    tasks = [asyncio.create_task(d.run()) for d in drivers]
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        yield listener, poller, got
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _pushed(got: list[Sample], meter: str) -> list[RawObjects]:
    return [s for s in got if isinstance(s, RawObjects) and s.meter_id == meter]


def _dead(got: list[Sample], reason: str) -> list[DeadLetter]:
    return [s for s in got if isinstance(s, DeadLetter) and s.reason == reason]


async def _send(port: int, data: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_a_ciphered_push_reads_as_a_poll_and_an_unknown_title_is_dead_lettered(tmp_path: Path) -> None:
    options = FleetOptions(meters=2, port=0, seed=5, speedup=0.0, secrets=Secrets(cipher=True))
    port = free_port()
    async with DlmsFleet(options) as fleet:
        cfg = _config(tmp_path, fleet, port, cipher=True)
        async with listening(cfg) as (listener, poller, got):
            await fleet.push_once(fleet.meters["D-0001"], "127.0.0.1", port)
            await eventually(lambda: _pushed(got, "D-0001"))
            await fleet.push_once(fleet.meters["D-0002"], "127.0.0.1", port)  # its title is nobody's
            await eventually(lambda: _dead(got, "unknown_sender"))
            polled = await poller.poll_now("D-0001")
            meter_time = fleet.meters["D-0001"].state.meter_time()
    push = _pushed(got, "D-0001")[0]
    assert push.raw[:1] == b"\xdb"  # general-glo-ciphering, as the meter sent it
    values = {code: (value, unit) for code, value, unit in push.values}
    assert set(values) == {"1-0:1.8.0", "1-0:2.8.0"}  # of the push, what the meter's object map reads
    polled_values = {code: (value, unit) for code, value, unit in polled.values}
    assert values["1-0:1.8.0"] == polled_values["1-0:1.8.0"]  # same Decimal and unit: scaler applied exactly
    assert values["1-0:2.8.0"] == polled_values["1-0:2.8.0"]
    # Stamped with the notification's date-time (the meter's clock; frozen here, speedup 0), to the
    # hundredth of a second a COSEM date-time carries.
    assert abs((push.ts - meter_time).total_seconds()) <= 0.01
    unknown = _dead(got, "unknown_sender")[0]
    assert (b"SIM" + (2).to_bytes(5, "big")).hex() in unknown.detail
    assert unknown.meter_id is None and bytes.fromhex(unknown.payload)[:1] == b"\xdb"
    assert listener.counts.emitted == 1


async def test_a_plain_push_is_known_by_its_logical_device_name(tmp_path: Path) -> None:
    options = FleetOptions(meters=1, port=0, seed=5, speedup=0.0)
    port = free_port()
    async with DlmsFleet(options) as fleet:
        cfg = _config(tmp_path, fleet, port, cipher=False)
        async with listening(cfg) as (_listener, _poller, got):
            await fleet.push_once(fleet.meters["D-0001"], "127.0.0.1", port)
            await eventually(lambda: _pushed(got, "D-0001"))
    push = _pushed(got, "D-0001")[0]
    assert push.raw[:1] == b"\x0f"  # a plain DataNotification
    values = {code: value for code, value, _ in push.values}
    assert LDN_1.encode().hex() in push.raw.hex() and Decimal(values["1-0:1.8.0"]) > 0


async def test_garbage_tampered_and_replayed_pushes_are_dead_letters_and_the_listener_goes_on(tmp_path: Path) -> None:
    options = FleetOptions(meters=1, port=0, seed=5, speedup=0.0, secrets=Secrets(cipher=True))
    port = free_port()
    async with DlmsFleet(options) as fleet:
        cfg = _config(tmp_path, fleet, port, cipher=True)
        meter = fleet.meters["D-0001"]
        async with listening(cfg) as (_listener, _poller, got):
            await _send(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a wrapper
            await eventually(lambda: _dead(got, "frame"))
            await _send(port, wrap(1, 102, b"\xc0\x01\xc1\x00\x08"))  # a GET request, not a notification
            await _send(port, wrap(1, 102, b"\x0f\x00\x00\x00\x01\x00\x02\x02\x09"))  # truncated body
            good = fleet.notification(meter, 1)
            tampered = good[:-1] + bytes([good[-1] ^ 1])
            await _send(port, wrap(1, 102, tampered))
            await eventually(lambda: len(_dead(got, "frame")) >= 3 and _dead(got, "decrypt"))
            await _send(port, wrap(1, 102, good))
            await eventually(lambda: _pushed(got, "D-0001"))
            await _send(port, wrap(1, 102, good))  # the same invocation counter again
            await eventually(lambda: _dead(got, "replay"))
    frames = _dead(got, "frame")
    assert bytes.fromhex(frames[0].payload).startswith(b"GET / HTTP")
    assert any("not a DataNotification" in d.detail for d in frames)
    assert any("notification body" in d.detail for d in frames)
    assert _dead(got, "decrypt")[0].meter_id == "D-0001"
    assert bytes.fromhex(_dead(got, "replay")[0].payload) == good
    assert len(_pushed(got, "D-0001")) == 1


async def test_a_running_gateway_stores_a_push(tmp_path: Path) -> None:
    options = FleetOptions(meters=1, port=0, seed=5, speedup=0.0, secrets=Secrets(cipher=True))
    port = free_port()
    async with DlmsFleet(options) as fleet:
        cfg = _config(tmp_path, fleet, port, cipher=True)
        async with running_gateway(cfg) as (_gw, api):
            async def pushed() -> dict[str, Any] | None:
                await fleet.push_once(fleet.meters["D-0001"], "127.0.0.1", port)
                resp = await api.get("/v1/meters/D-0001/readings/latest")
                rows = {r["channel"]: r for r in resp.json()["items"]} if resp.status_code == 200 else {}
                return rows if {"energy_import", "energy_export"} <= set(rows) else None

            rows = await eventually(pushed, every=0.5)
            status = (await api.get("/v1/diag/status")).json()
    assert rows["energy_import"]["source"] == "dlms" and rows["energy_import"]["value"] > 0
    assert "push" in repr(status)
