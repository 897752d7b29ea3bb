"""`meter-gateway scan --mbus`: primary addresses and the wildcard search of secondary ids on
simulated slaves (two of them share their id's first digits, so the search must go deeper), with
ready-to-paste configuration that loads."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from drivers.base import ScanRequest
from drivers.mbus.scan import SECONDARY_ONLY, scan
from gateway.cli import app
from gateway.runtime.config import parse_config
from gateway.scan_cli import mbus_config_text
from simulators.mbus.server import serve_tcp
from simulators.mbus.slave import Bus, heat, water


def fleet() -> Bus:
    # 250 and 251..: no usable primary address, found only by the search (251 is not probed).
    return Bus([water(3, 12345678), heat(9, 87654321), water(250, 12349999), heat(251 % 256, 55550001)])


async def test_scan_finds_primary_and_secondary_slaves() -> None:
    bus = fleet()
    bus.slaves[3].address = 0xFB  # not a primary address a scan probes
    server = await serve_tcp(bus)
    try:
        port = server.sockets[0].getsockname()[1]
        request = ScanRequest("tcp", host="127.0.0.1", port=port, timeout=0.1, units=tuple(range(0, 11)))
        report = await scan(request, {}, lambda done, total: None)
    finally:
        server.close()
        await server.wait_closed()
    primary = {h.unit: h for h in report.hits if h.unit != SECONDARY_ONLY}
    assert set(primary) == {3, 9}
    assert primary[3].profile == "mbus_water" and primary[9].profile == "mbus_heat"
    assert "secondary 12345678" in primary[3].how
    found = sorted(h.how.split()[1][:8] for h in report.hits if h.unit == SECONDARY_ONLY)
    assert found == ["12349999", "55550001"]  # 1234.... collides with 12345678 down to the fifth digit
    text = mbus_config_text(report, request, "cellar")
    assert 'secondary_address = "12349999' in text and "primary_address = 3" in text
    cfg, _ = parse_config(text, "scan.toml", env={})  # what it prints loads as it is
    assert len(cfg.meters) == 4


@pytest.fixture
def threaded_bus() -> Iterator[int]:
    """Slaves served by an event loop of their own (the command runs asyncio.run itself)."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(serve_tcp(fleet()))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_the_scan_command(threaded_bus: int) -> None:
    result = CliRunner().invoke(app, ["scan", "--mbus", f"127.0.0.1:{threaded_bus}", "--units", "0-12",
                                      "--timeout", "0.1", "--name", "cellar"])
    assert result.exit_code == 0, result.output
    assert re.search(r"primary_address = 3\s+mbus_map = \"mbus_water\"", result.stdout)
    assert "[[mbus.buses]]" in result.stdout


def test_a_bad_mbus_target_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["scan", "--mbus", "nohost:port"])
    assert result.exit_code == 2
    assert "--mbus" in result.output
