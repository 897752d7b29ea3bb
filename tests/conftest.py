"""Shared test setup. Real servers (Mosquitto, PostgreSQL + TimescaleDB, pymodbus, Gurux's DLMS
server as a separate process) are started by the fixture plugins below on free ports; each can be
stopped and restarted."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.mosquitto",
    "tests.fixtures.timescale",
    "tests.fixtures.modbus",
    "tests.fixtures.gateway",
    "tests.fixtures.dlms_peer",
]
