"""Issue 19 item 3: a fair bus under faults. Beside a meter that never answers, one that answers
slowly and one that answers an exception, seven healthy meters on the same bus are polled at their
full rate (polls counted by the simulator) with no overrun, and the dead meter costs the bus at
most its timeout x (1 + retries) per poll (counted in requests) until its breaker serves it.

No timed assertion: the poller runs for a window of many slots, and the counts are compared with
the slots in it. On main before issue 19 the healthy meters lost slots to the dead meter's
timeouts and retries (the bus's lock was first come, first served)."""

from __future__ import annotations

import asyncio
import time

from drivers.modbus import ModbusEndpoint, ModbusPoller, PollTarget, plan_reads
from tests.fixtures.modbus import Collected, MakeFleet, running

INTERVAL = 1.0
FAULTS = {"M-0008": ("timeout", {}), "M-0009": ("slow", {"delay": 0.3}), "M-0010": ("exception", {"exception_code": 4})}
#: Slots measured, after the first WARMUP of them.
SLOTS, WARMUP = 14, 3


async def test_healthy_meters_keep_their_full_rate_beside_a_dead_a_slow_and_a_refusing_meter(
        make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(n=10, update_interval=None)
    for meter_id, (fault, params) in FAULTS.items():
        fleet.set_fault(meter_id, fault, **params)  # type: ignore[arg-type]
    blocks = len(plan_reads(fleet.profile))
    units = {m.meter_id: unit for unit, m in fleet.meters.items()}
    healthy = [m for m in units if m not in FAULTS]
    endpoint = ModbusEndpoint("bus", "127.0.0.1", fleet.port, timeout=1.0, retries=1)
    poller = ModbusPoller(endpoint, [PollTarget(m, u, fleet.profile, INTERVAL) for m, u in units.items()], Collected())
    async with running(poller):
        await asyncio.sleep(WARMUP * INTERVAL)
        # Its first poll is how the gateway learns a meter is dead: the slots before are not counted.
        before, started, skipped = dict(fleet.requests_by_unit), time.time(), {m: h.skipped for m, h in poller.health().items()}
        await asyncio.sleep(SLOTS * INTERVAL)
        after, ended = dict(fleet.requests_by_unit), time.time()
        health = poller.health()
    # The boundaries that fell in the window: each healthy meter had one poll per slot.
    slots = int(ended // INTERVAL) - int(started // INTERVAL)
    polls = {m: (after.get(units[m], 0) - before.get(units[m], 0)) / blocks for m in healthy}
    assert {m: n for m, n in polls.items() if n < slots - 1} == {}, f"{slots} slots"
    assert {m: health[m].skipped - skipped[m] for m in healthy if health[m].skipped > skipped[m]} == {}
    assert all(health[m].failures == 0 for m in healthy)
    # The dead meter: one request and one retry per poll it tried, then its breaker opened.
    dead = health["M-0008"]
    assert fleet.requests_by_unit[units["M-0008"]] <= dead.polls * (1 + endpoint.retries)
    assert dead.breaker in ("open", "half_open") and dead.breaker_skips > 0
    assert health["M-0010"].failures > 0 and health["M-0009"].failures == 0
