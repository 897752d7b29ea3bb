"""The API against its own OpenAPI document: schemathesis generates requests for every
account-system route (and health) from the document, sends them to a real server over a
store holding real simulator data, and fails on any server error, an undocumented status
code or content type, or a body that does not match the documented schema."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from storage.base import Store
from tests.api.conftest import Keys
from tests.fixtures.gateway import eventually

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 20  # per operation: enough to reach every parameter's edges, small enough for ~30 s per store


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # pytest owns the signals


def _ours(path: str) -> bool:
    # The diagnostics routes answer from a running gateway (tested with one elsewhere).
    return path in ("/healthz", "/readyz", "/metrics") or (path.startswith("/v1/") and not path.startswith("/v1/diag"))


def run_schemathesis(document: dict[str, Any], base_url: str, key: str) -> list[str]:
    """Every generated case of every operation; the failures, as text."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails here, as it should
        if not _ours(operation.path):
            continue

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
    return failures


async def test_the_api_keeps_its_openapi_contract(store: Store, keys: Keys) -> None:
    app = create_app(store, key_cache_ttl=60)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or serving.done(), timeout=30)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        document = app.openapi()
        assert sum(1 for p in document["paths"] if _ours(p)) >= 20
        failures = await asyncio.to_thread(run_schemathesis, document, f"http://{host}:{port}", keys.admin)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)
    assert not failures, "\n\n".join(failures)
