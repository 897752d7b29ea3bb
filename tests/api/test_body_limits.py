"""Request bodies are bounded, and keys checked, before anything reads or parses a body.

In process: a body generator counts what the app pulled of it (httpx hands the ASGI app one
piece per receive). Against a real `meter-gateway run` process: eight concurrent 500 MB
bodies, with and without keys, move its memory by less than 64 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.routes.imports import MAX_BODY, MAX_BYTES
from storage.base import Store
from storage.keys import Scope, new_key
from storage.open import open_store
from tests.api.helpers import fails, ok
from tests.api.rawhttp import Answer, exchange, head, repeated
from tests.api.sqlite_app import make_key
from tests.fixtures.gateway import eventually, start_gateway_process
from tests.fixtures.ports import free_port

MB = 1024 * 1024
PIECE = 64 * 1024


class Body:
    """A request body of `pieces` pieces of `piece`, generated as the app asks; counts the pieces taken."""

    def __init__(self, piece: bytes, pieces: int, first: bytes = b"") -> None:
        self.piece, self.pieces, self.first = piece, pieces, first
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(self.pieces):
            self.taken += 1
            yield self.first if i == 0 and self.first else self.piece


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store("sqlite", sqlite_path=tmp_path / "store.db")
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _client(store: Store, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(store, key_cache_ttl=0, **options)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as client:
        yield client


JSON = {"content-type": "application/json"}
CSV = {"content-type": "text/csv"}


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("POST", "/v1/meters", JSON), ("PATCH", "/v1/meters/M-0001", JSON), ("POST", "/v1/readings/verify", JSON),
    ("POST", "/v1/meters/M-0001/assignments", JSON), ("POST", "/v1/meters/M-0001/commands", JSON),
    ("POST", "/v1/meters/import", CSV),
])
async def test_without_a_valid_key_the_body_is_not_read(sqlite_store: Store, method: str, path: str,
                                                         headers: dict[str, str]) -> None:
    read_only = await make_key(sqlite_store, Scope.READ)
    made_up, _ = new_key("nobody", frozenset({Scope.ADMIN}), datetime.now(UTC))
    async with _client(sqlite_store) as api:
        for auth, status, words in [({}, 401, "needs an API key"), ({"Authorization": "Bearer nonsense"}, 401,
                                    "not a meter-gateway API key"),
                                    ({"Authorization": f"Bearer {made_up}"}, 401, "not known"),
                                    ({"Authorization": f"Bearer {read_only}"}, 403, "lacks scope 'write'")]:
            body = Body(b"x" * PIECE, 200)  # 12.5 MB, chunked (no Content-Length)
            resp = await api.request(method, path, content=body, headers={**headers, **auth})
            await fails(resp, status, "unauthorized" if status == 401 else "forbidden", words)
            assert body.taken == 0, f"{method} {path}: the app read {body.taken} pieces of the body before {status}"
            assert resp.headers["connection"] == "close"  # the server must not drain the rest
            if status == 401:
                assert resp.headers["www-authenticate"] == "Bearer"


async def test_a_body_over_the_limit_is_413_naming_it(sqlite_store: Store) -> None:
    write = {"Authorization": f"Bearer {await make_key(sqlite_store, Scope.WRITE)}"}
    async with _client(sqlite_store, max_body_bytes=4096) as api:
        # Declared too long: refused before a byte is read, with or without a key. The rest is
        # short: the server may read and drop it, and keep the connection.
        for auth in ({}, write):
            body = Body(b" " * 1000, 5)
            resp = await api.post("/v1/meters", content=body, headers={**JSON, **auth, "content-length": "5000"})
            await fails(resp, 413, "body_too_large", "larger than 4,096 bytes", "POST /v1/meters")
            assert body.taken == 0 and "connection" not in resp.headers
        # Streamed (no length): refused as soon as it passes the limit, not at its end.
        body = Body(b" " * 1000, 10_000)
        resp = await api.post("/v1/meters", content=body, headers={**JSON, **write})
        await fails(resp, 413, "body_too_large", "larger than 4,096 bytes")
        assert body.taken == 5 and resp.headers["connection"] == "close"
        # Under the limit, streamed or not, the route works as before.
        meter = b'{"meter_id": "M-0900", "utility": "water", "protocol": "mqtt"' + b" " * 3900 + b"}"
        await ok(api.post("/v1/meters", content=meter, headers={**JSON, **write}), 201)
        await ok(api.patch("/v1/meters/M-0900", content=Body(b'{"status": "maintenance"}', 1),
                           headers={**JSON, **write}))


async def test_the_csv_import_streams_and_stops_at_its_own_limit(sqlite_store: Store) -> None:
    write = {"Authorization": f"Bearer {await make_key(sqlite_store, Scope.WRITE)}"}
    rows = b"M-0001,electricity,mqtt\n" * (PIECE // 24)
    async with _client(sqlite_store) as api:  # JSON routes keep their 1 MiB default
        body = Body(rows, 800, first=b"meter_id,utility,protocol\n")  # about 50 MB, chunked
        resp = await api.post("/v1/meters/import", content=body, headers={**CSV, **write})
        await fails(resp, 413, "body_too_large", f"larger than {MAX_BYTES:,} bytes", "CSV import")
        assert body.taken <= MAX_BYTES // len(rows) + 2, f"read {body.taken} pieces of {len(rows)} bytes"
        # A declared length above the import's limit is refused before a byte is read.
        body = Body(rows, 800)
        resp = await api.post("/v1/meters/import", content=body,
                              headers={**CSV, **write, "content-length": str(800 * len(rows))})
        await fails(resp, 413, "body_too_large", f"larger than {MAX_BODY:,} bytes", "POST /v1/meters/import")
        assert body.taken == 0
        # A file of a few MB (over the JSON routes' limit) still imports.
        lines = [b"meter_id,utility,protocol,location"] + [b"B-%05d,water,mqtt,%s" % (i, b"z" * 200)
                                                            for i in range(15_000)]
        report = await ok(api.post("/v1/meters/import", content=b"\n".join(lines), headers={**CSV, **write}), 201)
        assert report["imported"] == 15_000


# -- a real gateway process ------------------------------------------------------------------

BIG = 500 * 1000 * 1000
RSS_RISE_LIMIT = 64 * MB
#: Far past the limit: the gateway is stopped at once, so a broken build cannot eat the machine.
RSS_ABORT = 512 * MB


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


def _reset_peak(pid: int) -> bool:
    """Start VmHWM afresh from the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _multipart(total: int) -> Iterator[bytes]:
    boundary = b"flood"
    yield b"%x\r\n" % 200 + (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
                             b'filename="m.csv"\r\nContent-Type: text/csv\r\n\r\n').ljust(200, b"x") + b"\r\n"
    yield from repeated(b"M-0001,electricity,mqtt\n", total, chunked=True)


async def test_eight_500_mb_bodies_do_not_move_a_gateway_process(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\nid = "flood"\ndata_dir = "{data}"\n[api]\nport = {port}\n[mqtt]\nenabled = false\n')
    data.mkdir()
    async with await open_store("sqlite", sqlite_path=data / "store.db") as store:
        await store.migrate()
        key = await make_key(store, Scope.WRITE)
    made_up, _ = new_key("nobody", frozenset({Scope.ADMIN}), datetime.now(UTC))
    auth = {"Authorization": f"Bearer {key}"}
    json, csv = {"Content-Type": "application/json"}, {"Content-Type": "text/csv"}
    multipart = {"Content-Type": "multipart/form-data; boundary=flood"}

    def flood(path: str, headers: dict[str, str], *, declared: bool, method: str = "POST",
              body: Callable[[], Iterator[bytes]] | None = None) -> Callable[[], Answer]:
        def send() -> Answer:
            stream = body() if body else repeated(b"x", BIG, chunked=not declared)
            return exchange(port, head(method, path, port, headers, length=BIG if declared else None), stream)
        return send

    requests = {  # name: (send, expected status)
        "no key, JSON, declared": (flood("/v1/meters", json, declared=True), 413),
        "no key, JSON, chunked": (flood("/v1/meters", json, declared=False), 401),
        "no key, CSV import, chunked": (flood("/v1/meters/import", csv, declared=False), 401),
        "unknown key, JSON, chunked": (flood("/v1/meters", {**json, "Authorization": f"Bearer {made_up}"},
                                             declared=False), 401),
        "key, JSON, declared": (flood("/v1/meters", {**json, **auth}, declared=True), 413),
        "key, JSON, chunked": (flood("/v1/meters/M-0001", {**json, **auth}, declared=False, method="PATCH"), 413),
        "key, CSV import, chunked": (flood("/v1/meters/import", {**csv, **auth}, declared=False), 413),
        "key, multipart import, chunked": (flood("/v1/meters/import", {**multipart, **auth}, declared=False,
                                                 body=lambda: _multipart(BIG)), 413),
    }
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = await start_gateway_process(config, log)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                await eventually(lambda: _healthy(client), timeout=60)
                # Warm up every path the flood takes (imports, first allocations), then measure.
                for _ in range(3):
                    await ok(client.get("/v1/meters", headers=auth), 403)  # write key: no read scope
                    await fails(client.post("/v1/meters", json={}, headers=auth), 422, "invalid_request")
                    await fails(client.post("/v1/meters", content=b"x" * (2 * MB), headers={**json, **auth}), 413,
                                "body_too_large")
                    await fails(client.post("/v1/meters/import", content=b"x", headers=csv), 401, "unauthorized")
                await asyncio.sleep(0.5)
                peak_resettable = _reset_peak(proc.pid)
                base = _status(proc.pid)["VmRSS"]
                highest = base
                done = asyncio.Event()
                aborted = False

                async def watch() -> None:
                    nonlocal highest, aborted
                    while not done.is_set():
                        highest = max(highest, _status(proc.pid)["VmRSS"])
                        if highest - base > RSS_ABORT:
                            aborted = True
                            proc.kill()
                            return
                        await asyncio.sleep(0.01)

                watcher = asyncio.create_task(watch())
                loop = asyncio.get_running_loop()
                # A thread each, all at once (asyncio.to_thread's pool has only cores + 4 threads).
                with ThreadPoolExecutor(max_workers=len(requests)) as pool:
                    try:
                        answers = await asyncio.gather(*(loop.run_in_executor(pool, send)
                                                         for send, _ in requests.values()), return_exceptions=True)
                    finally:
                        done.set()
                        await watcher
                assert not aborted, f"the gateway's RSS rose by more than {RSS_ABORT // MB} MB: it was stopped"
                peak = max(highest, _status(proc.pid)["VmHWM"] if peak_resettable else highest)
                got = {name: a.status if isinstance(a, Answer) else repr(a) for name, a in zip(requests, answers, strict=True)}
                assert got == {name: status for name, (_, status) in requests.items()}
                for answer in answers:
                    assert isinstance(answer, Answer)
                    assert answer.headers["content-type"] == "application/json"
                    assert answer.headers.get("connection") == "close"
                    assert answer.sent < 100 * MB  # the client stopped long before its 500 MB
                rise = peak - base
                assert rise < RSS_RISE_LIMIT, f"RSS rose by {rise / MB:.1f} MB (from {base / MB:.0f} MB)"
                # And it goes on serving.
                created = await client.post("/v1/meters", json={"meter_id": "M-0801", "utility": "water",
                                                                "protocol": "mqtt"}, headers=auth)
                assert created.status_code == 201, created.text
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert "Traceback" not in (tmp_path / "gateway.log").read_text(errors="replace")


async def _healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/healthz")).status_code == 200
    except httpx.HTTPError:
        return False
