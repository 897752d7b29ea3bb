"""The core's control socket: answers and errors cross it as the in-process gateway gives them
(errors whose __init__ takes other arguments than a message included); the socket is 0600; an API
whose core does not answer says so — readiness fails on `core`, the core's routes answer 503 with
Retry-After, the store's routes go on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from gateway.errors import CoreUnavailable, DriverError, KeyConflict, NotFound
from gateway.runtime.control import CallFailed, ControlServer, CoreClient
from gateway.runtime.remote import RemoteGateway
from storage.keys import Scope
from storage.open import open_store
from tests.api.sqlite_app import make_key


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a callback")
        self.callback = lambda: None  # pickle refuses a lambda


def raise_(exc: Exception) -> Any:
    raise exc


async def test_answers_and_errors_cross_the_socket(tmp_path: Path) -> None:
    async def slow_echo(value: Any, *, twice: bool = False) -> Any:
        await asyncio.sleep(0)
        return [value, value] if twice else value

    handlers: dict[str, Callable[..., Any]] = {
        "add": lambda a, b: a + b, "echo": slow_echo,
        "missing": lambda: raise_(NotFound("meter", "M-9")),
        "conflict": lambda: raise_(KeyConflict("reference", "R-1", "c-1", ["amount: 5 != 6"])),
        "timeout": lambda: raise_(DriverError("M-2", "sim/2", "no answer within 0.3 s")),
        "odd": lambda: raise_(Unpicklable()),
    }
    server = ControlServer(tmp_path / "control.sock", handlers)
    await server.start()
    try:
        assert (tmp_path / "control.sock").stat().st_mode & 0o777 == 0o600
        client = CoreClient(tmp_path / "control.sock")
        assert await client.call("add", 2, 3) == 5
        assert await client.call("echo", {"x": (1, 2)}, twice=True) == [{"x": (1, 2)}, {"x": (1, 2)}]
        got = await asyncio.gather(*(client.call("add", i, i) for i in range(50)))
        assert got == [2 * i for i in range(50)]
        with pytest.raises(NotFound) as missing:
            await client.call("missing")
        assert (missing.value.what, missing.value.key, str(missing.value)) == ("meter", "M-9", "meter 'M-9' not found")
        with pytest.raises(KeyConflict) as conflict:
            await client.call("conflict")
        assert conflict.value.differences == ["amount: 5 != 6"] and "R-1" in str(conflict.value)
        with pytest.raises(DriverError) as failed:
            await client.call("timeout")
        assert (failed.value.meter_id, failed.value.where, failed.value.kind) == ("M-2", "sim/2", "driver_error")
        with pytest.raises(CallFailed, match="Unpicklable: holds a callback"):
            await client.call("odd")
        with pytest.raises(CallFailed, match="no call 'nope'"):
            await client.call("nope")
    finally:
        await server.close()
    assert not (tmp_path / "control.sock").exists()
    with pytest.raises(OSError):
        await CoreClient(tmp_path / "control.sock").call("add", 1, 1)


async def test_an_api_whose_core_is_down_says_so_and_serves_the_store(tmp_path: Path) -> None:
    async with await open_store("sqlite", sqlite_path=tmp_path / "store.db") as store:
        await store.migrate()
        key = await make_key(store, Scope.ADMIN)
        remote = RemoteGateway(CoreClient(tmp_path / "no-core.sock"), store)
        assert not await remote.hello()
        app = create_app(store, remote, key_cache_ttl=0)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test",
                                     headers={"Authorization": f"Bearer {key}"}) as api:
            ready = await api.get("/readyz")
            assert ready.status_code == 503 and ready.json()["failed"] == ["core"], ready.text
            for path in ("/v1/diag/status", "/v1/diag/meters", "/metrics"):
                down = await api.get(path)
                assert down.status_code == 503 and down.headers["retry-after"] == "2", (path, down.text)
                assert down.json()["error"] == "core_unavailable" and "not answering" in down.json()["message"]
            assert (await api.get("/v1/meters")).status_code == 200
            assert (await api.get("/v1/fleet/summary")).status_code == 200
    with pytest.raises(CoreUnavailable):
        await remote.status()
