"""`meter-gateway db check`: what a store written before the identifier rule holds that breaks it
(issue 22 item 6), on every store. The bad rows are written through the store itself, as the
API and configuration of earlier releases let them in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app as cli
from storage.audit import find_bad_identifiers
from storage.base import Store
from tests.storage.backends import open_backend
from tests.storage.samples import meter

AT = datetime(2026, 1, 1, tzinfo=UTC)

#: What the check must say about the rows `seed` writes, one line each.
EXPECTED = {
    "meter '../../etc/passwd': meter_id '../../etc/passwd' contains '/' (a path and topic separator)",
    "meter 'M..2': meter_id 'M..2' contains '..'",
    "meter 'M..2': device_number 'SN 2' contains a space",
    "meter 'M-3': consumer_number 'C 3' contains a space",
    "meter 'M-3': tags.feeder: the value is 10000 characters long, more than 256",
    "meter 'M-3': tags key 'a b' contains a space; an identifier is 1-64 characters of A-Z a-z 0-9 . _ : -, "
    "starting with a letter or digit, no '..'",
    "consumer 'C?9' (assigned to meter 'M-0001'): consumer_number 'C?9' contains the wildcard '?'",
}


async def seed(store: Store) -> None:
    await store.create_meters([
        meter("M-0001", device_number="SN-0001", consumer_number="C-1007"),
        meter("../../etc/passwd"),
        meter("M..2", device_number="SN 2"),
        meter("M-3", consumer_number="C 3", tags={"feeder": "x" * 10_000, "a b": "1"}),
        meter("M-4", consumer_number="C 3"),  # the same consumer: listed once
        meter("edge.1:7", device_number="SDM630-2211-0457", tags={"feeder": "F7 / north"}),
    ], at=AT)
    # A consumer the meter has since moved away from: found in the assignments only.
    await store.assign_meter("M-0001", "C?9", start=datetime(2025, 1, 1, tzinfo=UTC), at=AT)
    await store.assign_meter("M-0001", "C-2000", start=datetime(2025, 6, 1, tzinfo=UTC), at=AT)


async def test_every_stored_value_that_breaks_the_rule_is_found_once(store: Store) -> None:
    assert await find_bad_identifiers(store) == ([], 0)
    await seed(store)

    found, meters = await find_bad_identifiers(store)

    assert meters == 6
    assert sorted(str(f) for f in found) == sorted(EXPECTED)


@pytest.mark.parametrize("backend", ["sqlite", "timescale"])
async def test_cli_lists_them_and_exits_1(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        where = str(tmp_path / "store.db")
        storage = f'[storage]\nbackend = "sqlite"\nsqlite_path = "{where}"\n'
    else:
        where = request.getfixturevalue("timescale_dsn")
        storage = f'[storage]\nbackend = "timescale"\ndsn = "{where}"\n'
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n{storage}')
    runner = CliRunner()

    clean = await asyncio.to_thread(runner.invoke, cli, ["db", "check", "--config", str(config)])
    assert clean.exit_code == 0, clean.output
    assert "identifiers: all OK (0 meter(s) and their assignments checked)" in clean.output

    store = await open_backend(backend, where)
    try:
        await seed(store)
    finally:
        await store.close()
    dirty = await asyncio.to_thread(runner.invoke, cli, ["db", "check", "--config", str(config)])

    assert dirty.exit_code == 1, dirty.output
    lines = dirty.output.splitlines()
    assert set(lines[:-1]) == EXPECTED and len(lines) == len(EXPECTED) + 1
    assert lines[-1].startswith("7 stored value(s) break the identifier rule (1-64 characters of A-Z a-z 0-9")
