"""The DLMS driver against a DLMS server we did not write (Gurux's, GPL-2.0, in its own process:
tests/fixtures/dlms_peer.py), over real TCP with the IEC 62056-47 wrapper: register, extended
register, data, clock and profile reads with security off, low (password) and HLS-GMAC with global
ciphering; a wrong password or key is `association refused: authentication failure` for that meter
only; the invocation counter is kept across restarts; garbage is a dead letter in hex, never a crash;
a gateway run stores the readings with the meter's decimals."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from drivers.base import BuildContext
from drivers.dlms.errors import AssociationRefused
from drivers.dlms.links import WrapperLink, tcp_opener, wrap
from drivers.dlms.poller import DlmsPoller
from drivers.dlms.reads import EXTENDED_REGISTER, REGISTER, Reader, read_profile
from drivers.dlms.session import Security, Session
from drivers.dlms.spec import build
from gateway.config.sections import bindings
from gateway.model import DeadLetter, Event, EventKind
from gateway.model.samples import PollFailure, RawObjects, Sample
from gateway.runtime.config import GatewayConfig, cross_check
from tests.fixtures.dlms_peer import DlmsPeer, MakeDlmsPeer
from tests.fixtures.gateway import eventually, gateway_config, running_gateway


def security(peer: DlmsPeer, **override: Any) -> Security:
    s = peer.settings
    kw: dict[str, Any] = {"system_title": s.client_system_title_bytes}
    if s.auth == "low":
        kw |= {"authentication": "low", "password": s.password_bytes}
    elif s.auth == "hls_gmac":
        kw |= {"authentication": "hls_gmac", "authentication_key": s.authentication_key_bytes,
               "encryption_key": s.block_cipher_key_bytes}
    return Security(**(kw | override))


@asynccontextmanager
async def associated(peer: DlmsPeer, sec: Security, client: int | None = None, counter: int = 0
                     ) -> AsyncIterator[Session]:
    s = peer.settings
    link = WrapperLink(tcp_opener(peer.host, peer.port), "peer", client or s.client_address, s.server_address, 10)
    await link.open()
    try:
        session = Session(link, sec, meter_id="E-1", where="peer", invocation_counter=counter)
        await session.associate()
        yield session
        await session.release()
    finally:
        await link.close()


async def _reads(session: Session) -> None:
    r = Reader()
    energy = await r.read(session, REGISTER, "1-0:1.8.0")
    assert (energy.value, energy.unit) == (Decimal("12345678"), "Wh")
    voltage = await r.read(session, REGISTER, "1-0:32.7.0")
    assert (str(voltage.value), voltage.unit) == ("230.1", "V")  # 2301 with scaler -1, exactly
    demand = await r.read(session, EXTENDED_REGISTER, "1-0:1.6.0")
    assert (demand.value, demand.unit) == (Decimal("4200"), "W")
    serial = await r.read(session, 1, "0-0:96.1.0")
    assert serial.value == "GRX0000000001"
    meter_time = await r.clock(session)
    assert abs(meter_time.at - datetime.now(UTC)) < timedelta(minutes=5)
    end = datetime.now(UTC)
    rows = await read_profile(r, session, "1-0:99.1.0", end - timedelta(hours=3), end)
    assert [c.code for c in rows.columns] == ["0-0:1.0.0", "0-0:96.10.1", "1-0:1.8.0"]
    times = [t for t, _, _ in rows.rows]
    assert len(times) >= 11 and all(b - a == timedelta(minutes=15) for a, b in pairwise(times))
    assert all(t.minute % 15 == 0 and end - timedelta(hours=3, minutes=15) <= t <= end for t in times)
    stored = [Decimal(v[0].value) for _, _, v in rows.rows]
    deltas = {b - a for a, b in pairwise(stored)}
    assert deltas == {Decimal(250)} and all(v[0].unit == "Wh" for _, _, v in rows.rows)


async def test_reads_with_lowest_security(dlms_peer: DlmsPeer) -> None:
    async with associated(dlms_peer, security(dlms_peer)) as session:
        await _reads(session)


async def test_reads_with_a_password(dlms_peer_low: DlmsPeer) -> None:
    async with associated(dlms_peer_low, security(dlms_peer_low)) as session:
        await _reads(session)


async def test_reads_with_hls_gmac_and_global_ciphering(dlms_peer_hls: DlmsPeer) -> None:
    async with associated(dlms_peer_hls, security(dlms_peer_hls), counter=100) as session:
        await _reads(session)
        assert session.invocation_counter > 100
        assert session.meter_system_title == bytes.fromhex(dlms_peer_hls.settings.server_system_title)


@pytest.mark.parametrize(("auth", "override"), [
    ("low", {"password": b"wrong-pw"}),
    ("hls_gmac", {"encryption_key": bytes(16)}),
    ("hls_gmac", {"authentication_key": bytes(16)}),
])
async def test_a_wrong_password_or_key_is_an_authentication_failure(
        make_dlms_peer: MakeDlmsPeer, auth: str, override: dict[str, bytes]) -> None:
    peer = make_dlms_peer(auth)
    with pytest.raises(AssociationRefused, match=r"^meter E-1 \(peer\): association refused: authentication failure$"):
        async with associated(peer, security(peer, **override)):
            pass


# -- the poller, as the gateway builds it --------------------------------------------------------

def _config(tmp_path: Path, peers: dict[str, DlmsPeer], keys: dict[str, dict[str, str]], **dlms: Any) -> GatewayConfig:
    key_file = tmp_path / "dlms-keys.toml"
    key_file.write_text("".join(f'[meters."{m}"]\n' + "".join(f'{k} = "{v}"\n' for k, v in entry.items())
                                for m, entry in keys.items()))
    os.chmod(key_file, 0o600)
    endpoints = [{"name": f"ep-{m}", "host": p.host, "port": p.port, "timeout": 5} for m, p in peers.items()]
    meters = []
    for m, p in peers.items():
        s = p.settings
        meter: dict[str, Any] = {"meter_id": m, "protocol": "dlms", "endpoint": f"ep-{m}", "client_sap": s.client_address,
                                 "server_logical": s.server_address, "interval": 0.3, "align": False}
        if s.auth != "none":
            meter["authentication"] = s.auth
        meters.append(meter)
    cfg = gateway_config(tmp_path / "gw", dlms={"key_file": str(key_file), "state_dir": str(tmp_path / "dlms"),
                                                "system_title": peers[next(iter(peers))].settings.client_system_title,
                                                "endpoints": endpoints, "breaker_failures": 2, "breaker_cooldown": 60,
                                                **dlms})
    doc = cfg.model_dump(mode="json")
    doc["meters"] = meters
    cfg = GatewayConfig.model_validate(doc)
    assert not cross_check(cfg, {}, {}), cross_check(cfg, {}, {})
    return cfg


def _hls_keys(peer: DlmsPeer, **override: str) -> dict[str, str]:
    s = peer.settings
    return {"authentication_key": s.authentication_key, "encryption_key": s.block_cipher_key} | override


@asynccontextmanager
async def polling(cfg: GatewayConfig) -> AsyncIterator[tuple[list[DlmsPoller], list[Sample]]]:
    got: list[Sample] = []

    async def emit(sample: Sample) -> None:
        got.append(sample)

    pollers = build(BuildContext(settings=cfg.section("dlms"), meters=[b for b in bindings(cfg) if b.protocol == "dlms"],
                                 profiles={}, emit=emit, gateway_id="test"))
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run()) for p in pollers]
        try:
            yield pollers, got
        finally:
            for t in tasks:
                t.cancel()


def _raws(got: list[Sample], meter: str) -> list[RawObjects]:
    return [s for s in got if isinstance(s, RawObjects) and s.meter_id == meter]


async def test_a_wrong_key_fails_its_meter_only_and_it_backs_off(tmp_path: Path, make_dlms_peer: MakeDlmsPeer) -> None:
    good, bad = make_dlms_peer("hls_gmac"), make_dlms_peer("hls_gmac")
    cfg = _config(tmp_path, {"E-GOOD": good, "E-BAD": bad},
                  {"E-GOOD": _hls_keys(good), "E-BAD": _hls_keys(bad, encryption_key="0F" * 16)})
    async with polling(cfg) as (pollers, got):
        await eventually(lambda: len(_raws(got, "E-GOOD")) >= 3 and
                         sum(isinstance(s, PollFailure) and s.meter_id == "E-BAD" for s in got) >= 2)
        by_meter = {m: p for p in pollers for m in p.meter_ids()}
        bad_health = by_meter["E-BAD"].meter_health("E-BAD")
        assert bad_health is not None
        assert bad_health.last_error == "meter E-BAD (ep-E-BAD): association refused: authentication failure"
        assert bad_health.last_error_kind == "association" and bad_health.failures >= 2
        await eventually(lambda: (h := by_meter["E-BAD"].meter_health("E-BAD")) is not None and h.breaker == "open")
        good_health = by_meter["E-GOOD"].meter_health("E-GOOD")
        assert good_health is not None and good_health.failures == 0 and good_health.breaker == "closed"
    raw = _raws(got, "E-GOOD")[-1]
    values = {code: (value, unit) for code, value, unit in raw.values}
    assert values["1-0:1.8.0"] == (Decimal("12345678"), "Wh") and values["1-0:32.7.0"] == (Decimal("230.1"), "V")
    assert not any(isinstance(s, PollFailure) and s.meter_id == "E-GOOD" for s in got)
    assert "0F0F0F0F" not in repr(got) and "0f0f0f0f" not in repr(got)  # no key in what was emitted


async def test_the_invocation_counter_survives_a_restart(tmp_path: Path, make_dlms_peer: MakeDlmsPeer) -> None:
    peer = make_dlms_peer("hls_gmac")
    cfg = _config(tmp_path, {"E-1": peer}, {"E-1": _hls_keys(peer)})
    async with polling(cfg) as (_, got):
        await eventually(lambda: len(_raws(got, "E-1")) >= 2)
    saved = int((tmp_path / "dlms" / "E-1.invocation").read_text())
    assert saved > 0
    async with polling(cfg) as (_, got):  # a restarted gateway: starts from the file
        await eventually(lambda: len(_raws(got, "E-1")) >= 1)
        assert not [s for s in got if isinstance(s, PollFailure)]
    again = int((tmp_path / "dlms" / "E-1.invocation").read_text())
    assert again > saved
    (tmp_path / "dlms" / "E-1.invocation").unlink()  # a lost file: the meter's frame counter says where to go on
    async with polling(cfg) as (_, got):
        await eventually(lambda: len(_raws(got, "E-1")) >= 1)
        assert not [s for s in got if isinstance(s, PollFailure)]
    # Started above the last counter the meter received, not from 0 (one poll uses far fewer than `again`).
    assert int((tmp_path / "dlms" / "E-1.invocation").read_text()) > again


async def test_garbage_from_a_meter_is_a_dead_letter_in_hex_and_the_meter_goes_on_failing(tmp_path: Path,
                                                                                      dlms_peer: DlmsPeer) -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(8)
                await reader.readexactly(int.from_bytes(header[6:8], "big"))
                writer.write(wrap(1, 16, bytes.fromhex("61 03 a1 01 00 de ad be ef".replace(" ", ""))))  # a truncated AARE
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(liar, "127.0.0.1", 0)
    try:
        cfg = _config(tmp_path, {"E-OK": dlms_peer}, {})
        doc = cfg.model_dump(mode="json")
        doc["dlms"]["endpoints"].append({"name": "liar", "host": "127.0.0.1", "port": srv.sockets[0].getsockname()[1]})
        doc["meters"].append({"meter_id": "E-LIAR", "protocol": "dlms", "endpoint": "liar", "interval": 0.3, "align": False})
        async with polling(GatewayConfig.model_validate(doc)) as (_, got):
            await eventually(lambda: len(_raws(got, "E-OK")) >= 2 and
                             any(isinstance(s, DeadLetter) and s.meter_id == "E-LIAR" for s in got))
    finally:
        srv.close()
        await srv.wait_closed()
    dead = next(s for s in got if isinstance(s, DeadLetter) and s.meter_id == "E-LIAR")
    assert dead.source == "dlms" and dead.reason == "frame" and dead.payload == "6103a10100deadbeef"
    assert dead.detail.startswith("APDU not understood")
    failure = next(s for s in got if isinstance(s, PollFailure) and s.meter_id == "E-LIAR")
    assert failure.error.kind == "frame"
    assert not any(isinstance(s, Event) and s.kind is EventKind.COMM_LOST and s.meter_id == "E-OK" for s in got)


async def test_a_gateway_run_stores_the_meters_decimals(tmp_path: Path, dlms_peer_hls: DlmsPeer) -> None:
    cfg = _config(tmp_path, {"E-1": dlms_peer_hls}, {"E-1": _hls_keys(dlms_peer_hls)})
    async with running_gateway(cfg) as (_gw, api):
        async def latest() -> dict[str, Any] | None:
            resp = await api.get("/v1/meters/E-1/readings/latest")
            rows = {r["channel"]: r for r in resp.json()["items"]} if resp.status_code == 200 else {}
            return rows if {"energy_import", "voltage_l1", "energy_export"} <= set(rows) else None

        rows = await eventually(latest)
        diag = (await api.get("/v1/diag/meters/E-1")).json()
    assert rows["energy_import"]["value"] == 12345.678  # 12345678 Wh, exactly, in kWh
    assert rows["energy_export"]["value"] == 2.345
    assert rows["voltage_l1"]["value"] == 230.1
    assert rows["energy_import"]["source"] == "dlms"
    assert diag["protocol"] == "dlms"
    text = repr(diag)
    assert dlms_peer_hls.settings.block_cipher_key not in text and dlms_peer_hls.settings.authentication_key not in text


async def test_the_meters_clock_offset_moves_the_timestamp_for_vee(tmp_path: Path, make_dlms_peer: MakeDlmsPeer) -> None:
    peer = make_dlms_peer("none", clock_offset_s=600)  # the meter's clock runs 10 minutes ahead
    cfg = _config(tmp_path, {"E-1": peer}, {})
    async with polling(cfg) as (pollers, got):
        await eventually(lambda: len(_raws(got, "E-1")) >= 1)
        offset = pollers[0].clock_offset("E-1")
    raw = _raws(got, "E-1")[0]
    # ts = the poll's time + the meter's offset: VEE's time tolerance sees a device clock 10 min ahead
    # (CLOCK_SKEW beyond vee.skew_seconds, FUTURE_TS beyond its future limit).
    assert offset is not None and 540 < offset < 660
    assert 540 < (raw.ts - raw.received_at).total_seconds() < 660


async def test_a_wrongly_guessed_class_is_found_and_remembered(dlms_peer: DlmsPeer) -> None:
    reader = Reader()
    async with associated(dlms_peer, security(dlms_peer)) as session:
        read = await reader.read_guessed(session, EXTENDED_REGISTER, "1-0:1.8.0")  # it is a Register (class 3)
        again = await reader.read_guessed(session, EXTENDED_REGISTER, "1-0:1.8.0")
    assert read == again and (read.value, read.unit) == (Decimal("12345678"), "Wh")


async def test_a_meter_that_goes_away_is_lost_then_restored(tmp_path: Path, make_dlms_peer: MakeDlmsPeer) -> None:
    peer, other = make_dlms_peer("none"), make_dlms_peer("none")
    cfg = _config(tmp_path, {"E-1": peer, "E-2": other}, {}, reconnect_initial=0.2, reconnect_max=0.5,
                  failures_before_lost=2, breaker_failures=100)
    async with polling(cfg) as (pollers, got):
        await eventually(lambda: len(_raws(got, "E-1")) >= 1)
        peer.stop()
        await eventually(lambda: any(isinstance(s, Event) and s.kind is EventKind.COMM_LOST and s.meter_id == "E-1"
                                     for s in got))
        failures = [s for s in got if isinstance(s, PollFailure) and s.meter_id == "E-1"]
        assert failures and all(f.error.kind in ("connection", "timeout") for f in failures)
        e1 = next(p for p in pollers if "E-1" in p.meter_ids())
        assert e1.status(_NoObserved()).connected is False
        before = len(_raws(got, "E-2"))
        await eventually(lambda: len(_raws(got, "E-2")) > before)  # the other meter goes on meanwhile
        peer.start()
        await eventually(lambda: any(isinstance(s, Event) and s.kind is EventKind.COMM_RESTORED and s.meter_id == "E-1"
                                     for s in got))
    assert not any(isinstance(s, PollFailure) and s.meter_id == "E-2" for s in got)


class _NoObserved:
    def polls_per_second(self, endpoint: str) -> float:
        return 0.0

    def poll_failures(self, endpoint: str) -> dict[str, int]:
        return {}

    def messages_per_second(self) -> float:
        return 0.0

    def message_failures(self) -> dict[str, int]:
        return {}
