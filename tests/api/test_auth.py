"""Keys and scopes: 401 without a valid key, 403 with the wrong scope, the CLI that makes them."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from api.app import create_app
from api.auth import KeyCache, mirror_key
from gateway.cli import app as cli
from gateway.errors import SinkUnavailable
from storage.base import Store
from storage.keys import ApiKey, Scope, new_key
from storage.open import open_store
from tests.api.conftest import Keys
from tests.api.helpers import fails, ok


async def test_no_key_is_401_with_a_bearer_challenge(api: httpx.AsyncClient) -> None:
    resp = await api.get("/v1/meters", headers={"Authorization": ""})
    body = await fails(resp, 401, "unauthorized", "needs an API key with scope 'read'")
    assert resp.headers["www-authenticate"] == "Bearer" and set(body) == {"error", "message"}
    await fails(api.get("/v1/meters", headers={"Authorization": "Bearer nonsense"}), 401, "unauthorized",
                "not a meter-gateway API key")
    made_up, _ = new_key("nobody", frozenset({Scope.ADMIN}), datetime.now(UTC))
    await fails(api.get("/v1/meters", headers={"Authorization": f"Bearer {made_up}"}), 401, "unauthorized",
                "not known")


async def test_a_key_with_the_wrong_secret_is_401(api: httpx.AsyncClient, keys: Keys) -> None:
    forged = keys.read[:-4] + ("AAAA" if not keys.read.endswith("AAAA") else "BBBB")
    await fails(api.get("/v1/meters", headers={"Authorization": f"Bearer {forged}"}), 401, "unauthorized")


async def test_scopes(api: httpx.AsyncClient, keys: Keys) -> None:
    await ok(api.get("/v1/meters", headers=keys.header("read")))
    await fails(api.get("/v1/meters", headers=keys.header("write")), 403, "forbidden", "lacks scope 'read'",
                "it has: write")
    await fails(api.post("/v1/meters", headers=keys.header("read"),
                         json={"meter_id": "M-9", "utility": "water", "protocol": "mqtt"}), 403, "forbidden")
    await ok(api.post("/v1/meters", headers=keys.header("write"),
                      json={"meter_id": "M-9", "utility": "water", "protocol": "mqtt"}), 201)
    await fails(api.get("/metrics", headers=keys.header("read")), 403, "forbidden", "diag")
    assert (await api.get("/metrics", headers=keys.header("diag"))).status_code == 200
    await ok(api.get("/v1/payg/summary"))  # admin implies every scope


async def test_health_needs_no_key(api: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz"):
        assert (await api.get(path, headers={"Authorization": ""})).status_code == 200
    await fails(api.get("/metrics", headers={"Authorization": ""}), 401, "unauthorized")


async def test_a_revoked_key_is_401(store: Store, keys: Keys, api: httpx.AsyncClient) -> None:
    await ok(api.get("/v1/meters", headers=keys.header("read")))
    key_id = keys.read.split("_")[1]
    await store.revoke_api_key(key_id, at=datetime.now(UTC))
    await fails(api.get("/v1/meters", headers=keys.header("read")), 401, "unauthorized", "revoked")


class _DownStore:
    """A store whose key lookups fail as a database that is down does."""

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        raise SinkUnavailable("down")


async def test_key_cache_answers_from_the_mirror_while_the_store_is_down(tmp_path: Path) -> None:
    _, row = new_key("prometheus", frozenset({Scope.DIAG}), datetime.now(UTC))
    mirror = tmp_path / "keys.json"
    mirror_key(mirror, row)
    cache = KeyCache(ttl=5, mirror=mirror)

    assert await cache.get(_DownStore(), row.key_id) == row  # type: ignore[arg-type]
    with pytest.raises(SinkUnavailable):
        await cache.get(_DownStore(), "unknown0")  # type: ignore[arg-type]
    assert "hash" in mirror.read_text() and oct(mirror.stat().st_mode & 0o777) == "0o600"


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n')
    runner = CliRunner()

    made = runner.invoke(cli, ["keys", "create", "--config", str(config), "--scope", "read", "--scope", "write",
                               "--name", "billing"])
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    assert re.fullmatch(r"mgw_[a-z0-9]{8}_[A-Za-z0-9_-]{43}", key)
    key_id = key.split("_")[1]
    listed = runner.invoke(cli, ["keys", "list", "--config", str(config)])
    assert listed.exit_code == 0 and key_id in listed.output and "billing" in listed.output
    assert "read write" in listed.output and key.split("_")[2] not in listed.output  # never the secret
    wrong = runner.invoke(cli, ["keys", "create", "--config", str(config), "--scope", "root", "--name", "x"])
    assert wrong.exit_code == 2 and "--scope root" in wrong.output

    async def use() -> tuple[int, int]:
        async with await open_store("sqlite", sqlite_path=tmp_path / "store.db") as store:
            app = create_app(store, key_cache_ttl=0)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test",
                                         headers={"Authorization": f"Bearer {key}"}) as client:
                before = (await client.get("/v1/meters")).status_code
                revoked = await asyncio.to_thread(runner.invoke, cli, ["keys", "revoke", "--config", str(config), key_id])
                assert revoked.exit_code == 0 and "revoked at" in revoked.output
                return before, (await client.get("/v1/meters")).status_code

    assert asyncio.run(use()) == (200, 401)
    unknown = runner.invoke(cli, ["keys", "revoke", "--config", str(config), "nosuchid"])
    assert unknown.exit_code == 1 and "not found" in unknown.output


async def test_unknown_key_ids_are_answered_from_a_bounded_negative_cache(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    async with await open_store("sqlite", sqlite_path=tmp_path / "store.db") as store:
        await store.migrate()
        lookups: Counter[str] = Counter()
        lookup = store.get_api_key

        async def counted(key_id: str) -> ApiKey | None:
            lookups[key_id] += 1
            return await lookup(key_id)

        monkeypatch.setattr(store, "get_api_key", counted)
        made_up = [new_key("nobody", frozenset({Scope.ADMIN}), datetime.now(UTC))[0] for _ in range(5)]
        app = create_app(store, key_cache_ttl=60)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as api:
            for _ in range(40):
                for key in made_up:  # through RequireScope (no body) and RequestGuard (a body)
                    auth = {"Authorization": f"Bearer {key}"}
                    await fails(api.get("/v1/meters", headers=auth), 401, "unauthorized", "not known")
                    await fails(api.post("/v1/meters", json={}, headers=auth), 401, "unauthorized", "not known")
        assert lookups == Counter({key.split("_")[1]: 1 for key in made_up})  # not 80 each

        # Bounded (least recently used forgotten first) and forgotten after ttl.
        now = [0.0]
        cache = KeyCache(ttl=5, max_unknown=3, monotonic=lambda: now[0])
        lookups.clear()
        for key_id in ("aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd", "dddddddd", "cccccccc", "bbbbbbbb"):
            assert await cache.get(store, key_id) is None
        assert lookups == Counter({"aaaaaaaa": 1, "bbbbbbbb": 1, "cccccccc": 1, "dddddddd": 1})
        assert await cache.get(store, "aaaaaaaa") is None  # forgotten (4 ids > 3): asked again, d goes
        assert await cache.get(store, "dddddddd") is None
        assert (lookups["aaaaaaaa"], lookups["dddddddd"], lookups["bbbbbbbb"]) == (2, 2, 1)
        now[0] += 5.1
        assert await cache.get(store, "bbbbbbbb") is None
        assert lookups["bbbbbbbb"] == 2
        # The price, bounded by ttl: a key whose id was tried before it existed works ttl seconds later.
        _, row = new_key("late", frozenset({Scope.READ}), datetime.now(UTC))
        assert await cache.get(store, row.key_id) is None
        await store.create_api_key(row)
        assert await cache.get(store, row.key_id) is None
        now[0] += 5.1
        assert await cache.get(store, row.key_id) == row


class _KeyStore:
    """Answers key lookups from a dict (the mirror, not the store, is under test)."""

    def __init__(self, *rows: ApiKey) -> None:
        self.rows = {r.key_id: r for r in rows}

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        await asyncio.sleep(0)
        return self.rows.get(key_id)


async def test_keys_first_seen_at_once_are_all_mirrored(tmp_path: Path) -> None:
    # Eight requests at once with keys the cache has not seen: each writes the mirror. They wrote one
    # temporary file (a 500: FileNotFoundError when one renamed it under another) and could each drop
    # what the others added.
    rows = [new_key(f"client-{i}", frozenset({Scope.WRITE}), datetime.now(UTC))[1] for i in range(4)]
    mirror = tmp_path / "keys.json"
    cache = KeyCache(ttl=5, mirror=mirror)

    got = await asyncio.gather(*(cache.get(_KeyStore(*rows), rows[i % 4].key_id)  # type: ignore[arg-type]
                                 for i in range(8)))

    assert got == [rows[i % 4] for i in range(8)]
    down = KeyCache(ttl=5, mirror=mirror)
    assert [await down.get(_DownStore(), r.key_id) for r in rows] == rows  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


async def test_sixteen_first_requests_with_a_new_key_all_answer_200(tmp_path: Path) -> None:
    # Issue 26: the first few simultaneous requests with a freshly created key answered 500 or
    # dropped the connection, each mirroring the key through the same temporary file.
    from gateway.runtime.gateway import key_mirror
    from tests.fixtures.gateway import gateway_config, running_gateway

    cfg = gateway_config(tmp_path / "gw")
    async with running_gateway(cfg) as (gw, _):
        assert gw.store is not None and gw.api_url is not None
        key, row = new_key("billing", frozenset({Scope.READ}), datetime.now(UTC))
        await gw.store.create_api_key(row)  # as `meter-gateway keys create` does: stored, not mirrored
        async with httpx.AsyncClient(base_url=gw.api_url, timeout=30, limits=httpx.Limits(max_connections=16),
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            answers = await asyncio.gather(*(client.get("/v1/meters") for _ in range(16)))
        assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers if a.status_code != 200]
        mirror = key_mirror(cfg)
        assert row.key_id in mirror.read_text() and oct(mirror.stat().st_mode & 0o777) == "0o600"
        assert not [p.name for p in mirror.parent.iterdir() if p.name.endswith(".tmp")]
