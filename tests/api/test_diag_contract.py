"""The diagnostics routes against their own OpenAPI document, over a running gateway with real
simulated meters (one timing out, one answering exception codes) and a real broker: schemathesis
generates requests from the document and fails on a server error, an undocumented status code or
content type, or a body that does not match its schema."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from storage.keys import Scope
from tests.browser.diag_setup import make_key, running
from tests.fixtures.gateway import eventually, gateway_config

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15  # per operation


def fuzz(document: dict[str, Any], base_url: str, key: str) -> tuple[int, list[str]]:
    """Every generated case of every diagnostics operation: (operations run, failures as text)."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # our own document: every operation must load
        operation = result.ok()
        if not operation.path.startswith(("/v1/diag/", "/status/panel")):
            continue
        ran += 1

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # each failing operation is reported, then the test fails
            failures.append(f"{operation.label}: {exc}")
    return ran, failures


async def test_diagnostics_keep_their_openapi_contract(tmp_path: Path, mqtt_broker: Broker) -> None:
    async with SimFleet(load_profiles()["generic"], 3, seed=11, speedup=60) as fleet:
        fleet.set_fault("M-0002", "timeout")
        fleet.set_fault("M-0003", "exception")
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=0.5,
                             broker_port=mqtt_broker.port, payg_ids=["P-0001"])
        async with running(cfg) as (gw, api):
            key = (await make_key(gw, Scope.ADMIN))["Authorization"].removeprefix("Bearer ")
            await eventually(lambda: gw.subscriber is not None and gw.subscriber.connected)
            document = (await api.get("/openapi.json")).json()
            ran, failures = await asyncio.to_thread(fuzz, document, str(gw.api_url), key)
    assert ran == 10  # status, meters, one meter, payloads, poll, registers, attribute, dead letters, events, panel
    assert not failures, "\n\n".join(failures)
