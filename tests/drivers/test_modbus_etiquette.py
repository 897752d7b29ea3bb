"""Bus etiquette on RS-485 (issue 16, item 6): per endpoint, a quiet time between one answer and the
next request (`inter_request_delay`) and a cap on the registers one read spans
(`max_registers_per_request`), against a simulated meter that refuses requests arriving too soon or
reading too much (device busy, illegal data value), over real TCP."""

from __future__ import annotations

import pytest

from drivers.base import BuildContext
from drivers.modbus import ModbusPoller
from drivers.modbus.plan import plan_reads
from drivers.modbus.spec import build
from gateway.config.profiles import load_profiles
from gateway.config.sections import bindings
from gateway.errors import ConfigError
from gateway.runtime.config import parse_config
from tests.drivers.test_modbus_poller import GENERIC_WORDS, NO_BREAKER, endpoint, targets_of
from tests.fixtures.modbus import Collected, MakeFleet, profile, running, wait_until

POLLS = 4  # per meter, enough to see every meter read after another's answer


async def test_a_read_cap_splits_reads_a_meter_refuses_as_too_long(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(update_interval=None)
    fleet.max_registers = 8  # this meter answers at most 8 registers a read
    capped, got = Collected(), Collected()
    async with running(ModbusPoller(endpoint(fleet.port, max_registers=8), targets_of(fleet), capped,
                                    breaker=NO_BREAKER)):
        await wait_until(lambda: all(len(capped.raws(m.meter_id)) >= POLLS for m in fleet.meters.values()),
                         what="polls of every meter")
    assert not capped.failures() and fleet.refused_too_long == 0
    raw = capped.raws("M-0001")[0]
    assert [(b.address, len(b.words)) for b in raw.blocks] == [(0, 8), (8, GENERIC_WORDS - 8)]
    # The same bus without the cap: every poll is refused.
    async with running(ModbusPoller(endpoint(fleet.port), targets_of(fleet), got, breaker=NO_BREAKER)):
        await wait_until(lambda: len(got.failures()) >= POLLS, what="refused polls")
    assert fleet.refused_too_long >= POLLS and not got.raws("M-0001")


async def test_a_quiet_time_between_requests_keeps_a_slow_meter_answering(make_modbus_fleet: MakeFleet) -> None:
    fleet = await make_modbus_fleet(update_interval=None, n=3)
    fleet.min_request_gap = 0.03  # busy for 30 ms after each answer, as some RS-485 meters are
    got = Collected()
    async with running(ModbusPoller(endpoint(fleet.port), targets_of(fleet, interval=0.3, jitter=0.0), got,
                                    breaker=NO_BREAKER)):
        await wait_until(lambda: fleet.refused_too_soon >= 2, what="requests refused as too soon")
    assert got.failures()
    fleet.refused_too_soon = 0
    quiet = Collected()
    async with running(ModbusPoller(endpoint(fleet.port, pause=0.05), targets_of(fleet, interval=0.3, jitter=0.0),
                                    quiet, breaker=NO_BREAKER)):
        await wait_until(lambda: all(len(quiet.raws(m.meter_id)) >= POLLS for m in fleet.meters.values()),
                         what="polls of every meter")
    assert fleet.refused_too_soon == 0 and not quiet.failures()


ENDPOINT = """\
[[modbus.endpoints]]
name = "rs485"
host = "10.0.0.9"
transport = "rtu_tcp"
{extra}

[[meters]]
meter_id = "M-1"
endpoint = "rs485"
unit = 1
"""


def test_the_keys_reach_the_endpoint_and_its_read_plan() -> None:
    cfg, _ = parse_config(ENDPOINT.format(extra="inter_request_delay = 0.04\nmax_registers_per_request = 8"),
                          "t.toml", env={})
    ep = cfg.modbus.endpoints[0]
    assert (ep.quiet, ep.max_registers_per_request) == (0.04, 8)
    older, _ = parse_config(ENDPOINT.format(extra="pause = 0.02"), "t.toml", env={})
    assert older.modbus.endpoints[0].quiet == 0.02  # the older spelling still works
    assert [b.count for b in plan_reads(profile("generic"), None, 8)] == [8, GENERIC_WORDS - 8]
    assert [b.count for b in plan_reads(profile("generic"))] == [GENERIC_WORDS]

    async def ignore(_: object) -> None: ...

    [poller] = build(BuildContext(settings=cfg.modbus, profiles=load_profiles(), meters=bindings(cfg), emit=ignore,
                                  gateway_id="t"))
    assert isinstance(poller, ModbusPoller)
    assert (poller.endpoint.pause, poller.endpoint.max_registers) == (0.04, 8)


@pytest.mark.parametrize(("extra", "expected"), [
    ("max_registers_per_request = 0", "modbus.endpoints[0].max_registers_per_request at line 5: Input should be "
                                      "greater than or equal to 1"),
    ("max_registers_per_request = 126", "modbus.endpoints[0].max_registers_per_request at line 5: Input should be "
                                        "less than or equal to 125"),
    ("inter_request_delay = -0.1", "modbus.endpoints[0].inter_request_delay at line 5: Input should be greater "
                                   "than or equal to 0"),
])
def test_bad_etiquette_keys_name_key_and_line(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(ENDPOINT.format(extra=extra), "t.toml", env={})
    found = [str(p) for p in info.value.problems]
    assert any(p.startswith(expected) for p in found), found
