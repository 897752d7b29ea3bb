"""Backfill from meter memory (issue 17 item 4), over real TCP: after the gateway was stopped for 2 h,
the first poll is preceded by the 8 missing 15-minute intervals read from the meter's load profile,
each once, at its own capture time, with the row's status bits as quality flags - against our
simulator (seeded history, simulated time moved on by `advance`, gaps and tamper faults) and
against the Gurux peer (tests/fixtures/dlms_peer.py, a server we did not write)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

from drivers.dlms.backfill import BackfillPolicy
from drivers.dlms.poller import DlmsPoller, DlmsTarget
from drivers.dlms.reads import REGISTER
from drivers.dlms.session import Security
from drivers.dlms.settings import DlmsEndpoint
from gateway.model import Batch, Channel, Kind, Quality, Reading, Source
from gateway.model.samples import RawObjects, Sample
from gateway.runtime.config import GatewayConfig
from gateway.runtime.store import open_configured_store
from simulators.dlms import DlmsFleet, FleetOptions
from simulators.dlms.model import DAY_INTERVALS, INTERVAL_S
from simulators.dlms.profile import LoadProfile, gap_intervals
from tests.fixtures.dlms_peer import MakeDlmsPeer
from tests.fixtures.gateway import eventually, gateway_config, running_gateway

QUARTER = timedelta(minutes=15)
#: What the status bits mean, written out here independently of drivers/dlms/backfill.py.
BITS = {0x80: Quality.POWER_FAIL, 0x20: Quality.CLOCK_ADJUSTED, 0x10: Quality.TAMPER}


def flags(status: int) -> Quality:
    q = Quality.NONE
    for bit, flag in BITS.items():
        if status & bit:
            q |= flag
    return q


def floor15(at: datetime) -> datetime:
    return datetime.fromtimestamp(at.timestamp() // 900 * 900, UTC)


def target(meter_id: str) -> DlmsTarget:
    return DlmsTarget(meter_id, 16, 1, None, Security(), ((REGISTER, "1-0:1.8.0"),), interval=1.0, align=False)


async def first_poll(endpoint: DlmsEndpoint, meter_id: str, clock: Callable[[], datetime] | None = None,
                     since: datetime | None = None) -> tuple[list[Sample], RawObjects]:
    """Run a poller (a gateway start) until the meter's first poll is emitted; what it emitted, and that poll."""
    got: list[Sample] = []

    async def emit(sample: Sample) -> None:
        got.append(sample)

    async def last(_meter: str) -> datetime | None:  # the store's newest reading of the meter
        return since

    poller = DlmsPoller(endpoint, [target(meter_id)], emit, clock=clock, backfill=BackfillPolicy(), since=last)
    task = asyncio.create_task(poller.run())
    try:
        # The poll's own reading carries the session's APDU; backfilled rows are no APDU of their own.
        poll: RawObjects = await eventually(lambda: next((x for x in got if isinstance(x, RawObjects) and x.raw), None))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got[:got.index(poll)], poll


def filled(samples: list[Sample]) -> list[RawObjects]:
    return [x for x in samples if isinstance(x, RawObjects)]


async def test_two_hours_down_then_started_backfills_the_eight_intervals_from_the_simulator() -> None:
    async with DlmsFleet(FleetOptions(meters=1, port=0, seed=5)) as fleet:
        fleet.advance((450 - fleet.now().timestamp() % 900) % 900)  # mid-interval: 2 h then hold 8 boundaries
        meter = fleet.meters["D-0001"]
        endpoint = DlmsEndpoint(name="sim", host="127.0.0.1", port=meter.port, timeout=5)
        before, last = await first_poll(endpoint, "D-0001", fleet.now)
        assert not filled(before)  # nothing stored yet: nothing to fill
        fleet.advance(2 * 3600)  # the gateway is down for two hours
        gap, poll = await first_poll(endpoint, "D-0001", fleet.now, since=last.ts)
    rows = filled(gap)
    want = [floor15(last.ts) + QUARTER * k for k in range(1, 9)]
    assert [r.ts for r in rows] == want  # each interval once, at its own time, before the poll
    assert poll.ts > want[-1]
    energy = [dict((c, v) for c, v, _ in r.values)["1-0:1.8.0"] for r in rows]
    assert all(isinstance(v, Decimal) for v in energy) and energy == sorted(energy)
    assert all(r.quality == Quality.NONE for r in rows)


async def test_the_simulators_status_bits_become_flags_and_its_gaps_stay_gaps() -> None:
    options = FleetOptions(meters=1, port=0, seed=5, faults={"D-0001": frozenset({"gaps", "tamper"})})
    async with DlmsFleet(options) as fleet:
        meter = fleet.meters["D-0001"]
        endpoint = DlmsEndpoint(name="sim", host="127.0.0.1", port=meter.port, timeout=5)
        since = fleet.now() - timedelta(days=5)
        gap, _poll = await first_poll(endpoint, "D-0001", fleet.now, since=since)
        profile = next(o for o in meter.objects.values() if isinstance(o, LoadProfile))
        origin = meter.state.consumption.origin
    rows = filled(gap)
    ks = [round((r.ts - origin).total_seconds() / INTERVAL_S) for r in rows]
    missing = {k for day in range(ks[0] // DAY_INTERVALS, ks[-1] // DAY_INTERVALS + 1)
               for k in gap_intervals(meter.state, day)}
    assert missing and not missing & set(ks)  # what the meter did not record is not made up
    assert sorted(set(range(ks[0], ks[-1] + 1)) - set(ks)) == sorted(k for k in missing if ks[0] <= k <= ks[-1])
    assert [r.quality for r in rows] == [flags(profile._status(k)) for k in ks]
    seen = {f for r in rows for f in (Quality.POWER_FAIL, Quality.TAMPER) if r.quality & f}
    assert seen == {Quality.POWER_FAIL, Quality.TAMPER}


async def test_two_hours_down_backfills_from_the_gurux_peer_with_its_status_bits(make_dlms_peer: MakeDlmsPeer) -> None:
    last = floor15(datetime.now(UTC) - timedelta(seconds=61)) - timedelta(hours=2)  # the store's newest reading
    want = [last + QUARTER * k for k in range(1, 9)]
    peer = make_dlms_peer(profile_days=1, profile_status={want[2].isoformat(): 0x80, want[5].isoformat(): 0x30,
                                                          want[6].isoformat(): 0x01})
    endpoint = DlmsEndpoint(name="peer", host=peer.host, port=peer.port, timeout=10)
    gap, _poll = await first_poll(endpoint, "E-1", since=last)
    rows = filled(gap)
    assert [r.ts for r in rows] == want
    assert [r.quality for r in rows] == [Quality.NONE, Quality.NONE, Quality.POWER_FAIL, Quality.NONE, Quality.NONE,
                                         Quality.CLOCK_ADJUSTED | Quality.TAMPER, Quality.NONE, Quality.NONE]
    energy = [dict((c, (v, u)) for c, v, u in r.values)["1-0:1.8.0"] for r in rows]
    assert {u for _, u in energy} == {"Wh"}
    wh = [v for v, _ in energy if isinstance(v, Decimal)]
    assert [b - a for a, b in pairwise(wh)] == [Decimal(250)] * 7  # the meter's own values, exactly


async def test_a_short_gap_reads_no_profile(make_dlms_peer: MakeDlmsPeer) -> None:
    peer = make_dlms_peer()
    endpoint = DlmsEndpoint(name="peer", host=peer.host, port=peer.port, timeout=10)
    gap, _poll = await first_poll(endpoint, "E-1", since=datetime.now(UTC) - timedelta(minutes=5))
    assert not filled(gap)


async def test_a_gateway_stopped_for_two_hours_stores_the_eight_intervals_as_real_readings_once(
        tmp_path: Path, make_dlms_peer: MakeDlmsPeer) -> None:
    """The store's newest reading of the meter is 2 h old (the gateway was down): at start the gateway
    reads the 8 intervals from the meter's profile, stores them as real readings (none estimated)
    with their status flags, and the feed shows each once."""
    last = floor15(datetime.now(UTC) - timedelta(seconds=61)) - timedelta(hours=2)
    want = [last + QUARTER * k for k in range(1, 9)]
    peer = make_dlms_peer(profile_days=1, profile_status={want[3].isoformat(): 0x80})
    anchor = floor15(datetime.now(UTC))  # the peer's newest row at its start holds its register's value
    cfg = gateway_config(tmp_path / "gw", dlms={
        "state_dir": str(tmp_path / "dlms"),
        "endpoints": [{"name": "peer", "transport": "wrapper", "host": peer.host, "port": peer.port, "timeout": 10}]})
    doc: dict[str, Any] = cfg.model_dump(mode="json")
    doc["meters"] = [{"meter_id": "E-1", "protocol": "dlms", "endpoint": "peer", "client_sap": 16,
                      "server_logical": 1, "interval": 0.5, "align": False}]
    cfg = GatewayConfig.model_validate(doc)
    wh_at_last = 12345678 + int((last - anchor) / QUARTER) * 250
    store = await open_configured_store(cfg)
    try:
        await store.migrate()
        await store.write(Batch(readings=[Reading("E-1", Channel.ENERGY_IMPORT, last, wh_at_last / 1000,
                                                  Kind.CUMULATIVE, source=Source.DLMS)]))
    finally:
        await store.close()
    async with running_gateway(cfg) as (_gw, api):
        async def stored() -> list[dict[str, Any]] | None:
            resp = await api.get("/v1/meters/E-1/readings", params={
                "start": last.isoformat(), "end": datetime.now(UTC).isoformat(), "channel": "energy_import",
                "limit": 1000})
            items: list[dict[str, Any]] = resp.json()["items"] if resp.status_code == 200 else []
            later = [r for r in items if datetime.fromisoformat(r["ts"]) > want[-1] + timedelta(seconds=30)]
            return items if later else None  # a poll after the gap is stored: the backfill went before it

        items = await eventually(stored)
        feed = (await api.get("/v1/readings/feed", params={"limit": 10_000})).json()["items"]
    by_ts = {datetime.fromisoformat(r["ts"]): r for r in items}
    assert set(want) <= set(by_ts)
    assert [by_ts[t]["source"] for t in want] == ["dlms"] * 8
    assert [by_ts[t]["status"] for t in want] == ["valid"] * 8
    # "gap" aside: the test polls every 0.5 s, so VEE calls any 15-minute step a gap (at the meter's
    # 900 s it would not); the status byte's flag is on its interval only.
    assert [[f for f in by_ts[t]["quality"] if f != "gap"] for t in want] == [[], [], [], ["power_fail"], [], [], [],
                                                                               []]
    assert [by_ts[t]["value"] for t in want] == [(wh_at_last + 250 * k) / 1000 for k in range(1, 9)]
    assert not [r for r in items if r["source"] == "estimate" or r["status"] == "estimated"]
    shown = [datetime.fromisoformat(r["ts"]) for r in feed if r["meter_id"] == "E-1" and r["channel"] == "energy_import"]
    assert [t for t in shown if t in set(want)] == want  # each interval once, in order
