"""Admission: a bound on the API's work in flight; beyond it `503` with `Retry-After`, at once.

The outermost middleware, so a request over the bound costs a counter and a short answer: no
key lookup, no body read, no route, no store query. A client that opens thousands of
connections or asks faster than the API answers therefore gets 503s, and the work admitted
(and the gateway's pollers, which share the machine) keeps its share of the CPU.

`/healthz` answers from memory and is never refused (a liveness probe that fails under load
would have the service killed for being busy). `/readyz` asks the store and the gateway's core,
so it has a small bound of its own: probes are few, a flood of them is refused like the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

#: Paths with no bound at all: they answer from memory.
EXEMPT = frozenset({"/healthz"})
#: Paths counted apart from the rest, under `probe_limit`.
PROBES = frozenset({"/readyz"})


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """`max_in_flight` requests at once (probes aside), `probe_limit` readiness probes at once;
    the clients refused are told to come back after `retry_after` seconds."""

    max_in_flight: int = 64
    probe_limit: int = 8
    retry_after: int = 1


@dataclass(slots=True)
class AdmissionCounts:
    """What /metrics shows of admission (the API process's own, beside the core's series)."""

    in_flight: int = 0
    probes: int = 0
    #: Requests answered 503 by admission since start.
    refused: int = 0

    def metrics_text(self) -> bytes:
        return (f"# HELP meter_gateway_api_refused_total Requests answered 503 by admission control ([api] "
                f"max_in_flight)\n# TYPE meter_gateway_api_refused_total counter\n"
                f"meter_gateway_api_refused_total {self.refused}\n"
                f"# HELP meter_gateway_api_in_flight Requests the API is working on\n"
                f"# TYPE meter_gateway_api_in_flight gauge\nmeter_gateway_api_in_flight {self.in_flight}\n").encode()


class Admission:
    """Pure ASGI middleware: counts requests from their start to their last byte sent."""

    def __init__(self, app: ASGIApp, limits: AdmissionLimits | None = None,
                 counts: AdmissionCounts | None = None) -> None:
        self.app = app
        self.limits = limits = limits or AdmissionLimits()
        self.counts = counts if counts is not None else AdmissionCounts()
        body = json.dumps({"error": "overloaded", "message": (
            f"the API is answering {limits.max_in_flight} requests already; try again in "
            f"{limits.retry_after} s")}).encode()
        self._body = body
        self._headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"retry-after", str(limits.retry_after).encode()), (b"cache-control", b"no-store"),
                         (b"x-content-type-options", b"nosniff")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        probe = scope["path"] in PROBES
        counts = self.counts
        if (counts.probes >= self.limits.probe_limit) if probe else (counts.in_flight >= self.limits.max_in_flight):
            counts.refused += 1
            await send({"type": "http.response.start", "status": 503, "headers": self._headers})
            await send({"type": "http.response.body", "body": self._body})
            return
        # One event loop: the check and the count are one step, no lock needed.
        if probe:
            counts.probes += 1
        else:
            counts.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            if probe:
                counts.probes -= 1
            else:
                counts.in_flight -= 1
