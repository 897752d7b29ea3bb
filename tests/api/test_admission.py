"""Admission control on a real server: beyond [api] max_in_flight requests at work, every other
request is answered 503 with Retry-After at once (before its key is looked at); /healthz and
/readyz still answer; once the work in flight ends, requests are served again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.fixtures.gateway import eventually, gateway_config, running_gateway


async def stuck_post(port: int, key: str) -> asyncio.StreamWriter:
    """A POST whose head promises a body that never comes: the request stays at work (its key
    checked, the route waiting for the body) until the connection closes."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST /v1/meters HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {key}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode())
    await writer.drain()
    return writer


async def flood(url: str, key: str, n: int) -> list[httpx.Response]:
    """`n` requests at once (half with the key, half without), then /healthz and /readyz."""
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=n)) as crowd:
        return await asyncio.gather(
            *(crowd.get("/v1/meters", headers={"Authorization": key} if i % 2 else {}) for i in range(n)),
            crowd.get("/healthz"), crowd.get("/readyz"))


async def test_work_beyond_the_bound_is_refused_at_once_and_served_again_after(tmp_path: Path) -> None:
    cfg = gateway_config(tmp_path / "gw", api={"max_in_flight": 2, "retry_after": 3})
    async with running_gateway(cfg) as (gw, api):
        assert gw.api_url is not None
        port = urlsplit(gw.api_url).port
        assert port is not None
        key = api.headers["Authorization"]
        assert (await api.get("/v1/meters")).status_code == 200
        stuck = [await stuck_post(port, key) for _ in range(2)]
        try:
            async def refused() -> bool:
                return (await api.get("/v1/meters")).status_code == 503

            await eventually(refused, timeout=30)
            *answers, health, ready = await flood(gw.api_url, key, 200)
            assert {a.status_code for a in answers} == {503}
            assert all(a.headers["retry-after"] == "3" for a in answers)
            assert all(a.json()["error"] == "overloaded" for a in answers)
            assert health.status_code == 200 and ready.status_code == 200, (health.text, ready.text)
        finally:
            for writer in stuck:
                writer.close()

        async def served() -> bool:
            return (await api.get("/v1/meters")).status_code == 200

        await eventually(served, timeout=30)
        metrics = (await api.get("/metrics")).text
        counted = next(line for line in metrics.splitlines() if line.startswith("meter_gateway_api_refused_total "))
        assert float(counted.split()[1]) >= 200
