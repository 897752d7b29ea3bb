"""HTTP as the OpenAPI document says it: OPTIONS and Allow, no Host reflection, the headers on
every answer, timestamps as ISO 8601 text only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from api.routes.docs import CSP
from gateway.runtime.config import GatewayConfig
from tests.api.helpers import fails, ok
from tests.api.sqlite_app import sqlite_api
from tests.fixtures.gateway import gateway_config, running_gateway

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


def _regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")


def _url(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "X-1", template)


def _allow(resp: httpx.Response) -> set[str]:
    return {m.strip() for m in resp.headers["allow"].split(",")}


async def test_options_and_allow_agree_with_the_openapi_document(tmp_path: Path) -> None:
    async with sqlite_api(tmp_path) as (_, _, api):
        doc = await ok(api.get("/openapi.json"))
        documented = {path: {m.upper() for m in ops} for path, ops in doc["paths"].items()}
        assert not any(m in ("HEAD", "OPTIONS") for ms in documented.values() for m in ms)
        for template in documented:
            url = _url(template)
            # The URL may match more than one documented path (/v1/meters/import is also a {meter_id}).
            expected = set().union(*(ms for t, ms in documented.items() if _regex(t).match(url))) | {"OPTIONS"}
            resp = await api.options(url)
            assert (resp.status_code, _allow(resp), resp.content) == (204, expected, b""), f"OPTIONS {url}"
            for method in METHODS:
                if method in expected:
                    continue
                resp = await api.request(method, url)
                assert resp.status_code == 405 and _allow(resp) == expected, f"{method} {url}: {resp.headers}"
                if method != "HEAD":
                    await fails(resp, 405, "method_not_allowed", f"{method} is not allowed on {url}", "allowed: ")
        assert len(documented) > 30
        # Undocumented pages say what they serve too (Starlette's own /openapi.json route serves HEAD).
        for path, allowed in [("/status", {"GET", "OPTIONS"}), ("/docs", {"GET", "OPTIONS"}),
                              ("/openapi.json", {"GET", "HEAD", "OPTIONS"})]:
            resp = await api.options(path)
            assert (resp.status_code, _allow(resp)) == (204, allowed), path
        assert (await api.options("/nothing/here")).status_code == 404


async def test_a_trailing_slash_is_a_404_with_a_hint_and_the_host_is_never_reflected(tmp_path: Path) -> None:
    async with sqlite_api(tmp_path) as (_, _, api):
        for path in ("/v1/meters/", "/healthz/", "/v1/meters/M-0001/readings/", "/v1/meters/M-0001/"):
            resp = await api.get(path, headers={"Host": "evil.example"})
            body = await fails(resp, 404, "not_found", f"did you mean {path.rstrip('/')} (without the trailing slash)")
            assert "location" not in resp.headers and "evil" not in resp.text, body
        await fails(api.get("/v1/nothing/", headers={"Host": "evil.example"}), 404, "not_found", "nothing at /v1/nothing/")
        # Any Host is answered by default (documented): the check is opt-in.
        assert (await api.get("/healthz", headers={"Host": "evil.example"})).status_code == 200


async def test_allowed_hosts_answers_only_the_hosts_listed(tmp_path: Path) -> None:
    async with sqlite_api(tmp_path, allowed_hosts=["gateway.example", "*.plant.example"]) as (_, _, api):
        for host in ("gateway.example", "gateway.example:8080", "gw7.plant.example"):
            assert (await api.get("/v1/meters", headers={"Host": host})).status_code == 200, host
        for host in ("evil.example", "plant.example.evil", "127.0.0.1"):
            resp = await api.get("/v1/meters", headers={"Host": host})
            assert resp.status_code == 400 and resp.headers["x-content-type-options"] == "nosniff", host
    # The setting, from the config file to the running gateway's API.
    with pytest.raises(ValidationError, match=r"'http://gateway.example'.*host name or IPv4 address"):
        GatewayConfig.model_validate({"api": {"allowed_hosts": ["gateway.example", "http://gateway.example"]}})
    cfg = gateway_config(tmp_path / "gw", api={"host": "127.0.0.1", "port": 0, "allowed_hosts": ["127.0.0.1"]})
    async with running_gateway(cfg) as (_, client):
        await ok(client.get("/v1/meters"))
        assert (await client.get("/v1/meters", headers={"Host": "evil.example"})).status_code == 400


async def test_every_answer_says_nosniff_and_no_store(tmp_path: Path) -> None:
    async with sqlite_api(tmp_path, max_body_bytes=2048, allowed_hosts=["gw.test"]) as (app, _, api):
        async def boom() -> None:
            raise RuntimeError("a bug")

        app.add_api_route("/boom", boom)
        answers = {
            200: api.get("/v1/meters"), 401: api.get("/v1/meters", headers={"Authorization": ""}),
            404: api.get("/v1/nothing"), 405: api.put("/v1/meters"), 204: api.options("/v1/meters"),
            413: api.post("/v1/meters", content=b" " * 4096, headers={"content-type": "application/json"}),
            422: api.get("/v1/events", params={"from": "yesterday"}), 400: api.get("/healthz", headers={"Host": "x"}),
            500: api.get("/boom"),
        }
        for status, request in answers.items():
            resp = await request
            assert resp.status_code == status, resp.text
            assert (resp.headers.get("cache-control"), resp.headers.get("x-content-type-options")) == \
                ("no-store", "nosniff"), (status, resp.headers)
        for path in ("/healthz", "/openapi.json", "/metrics", "/v1/meters/NOPE", "/status"):
            resp = await api.get(path)
            assert resp.headers["cache-control"] == "no-store" and resp.headers["x-content-type-options"] == "nosniff"
        # What sets its own Cache-Control keeps it: the documentation pages and their files.
        for path in ("/docs", "/redoc", "/docs/static/swagger-ui-bundle.js", "/docs/static/redoc.standalone.js"):
            resp = await api.get(path)
            assert resp.status_code == 200, path
            assert (resp.headers["cache-control"], resp.headers["x-content-type-options"]) == ("no-cache", "nosniff")
        assert (await api.get("/docs")).headers["content-security-policy"] == CSP


# -- timestamps ------------------------------------------------------------------------------

NOT_TIMESTAMPS: list[Any] = [0, 1.5, 1700000000, "0.5", "1700000000", True, {"ts": 1}, ["2026-03-01T00:00:00Z"],
                             "2026-03-01", "yesterday"]


def _is_timestamp(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "date-time" or any(_is_timestamp(s) for s in schema.get("anyOf", []))


def _body_timestamps(doc: dict[str, Any], op: dict[str, Any]) -> list[str]:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return []
    ref = content["schema"].get("$ref", "")
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else content["schema"]
    return [name for name, prop in schema.get("properties", {}).items() if _is_timestamp(prop)]


async def test_timestamps_are_iso_8601_text_never_numbers(tmp_path: Path) -> None:
    async with sqlite_api(tmp_path) as (_, _, api):
        doc = await ok(api.get("/openapi.json"))
        checked: set[tuple[str, str, str]] = set()
        for template, ops in doc["paths"].items():
            url = _url(template)
            for method, op in ops.items():
                for param in op.get("parameters", []):
                    if param["in"] != "query" or not _is_timestamp(param["schema"]):
                        continue
                    for value in NOT_TIMESTAMPS[:5] + NOT_TIMESTAMPS[8:]:
                        resp = await api.request(method, url, params={param["name"]: str(value)})
                        body = await fails(resp, 422, "invalid_request")
                        assert any(p.startswith(f"query.{param['name']}:") and "ISO 8601" in p
                                   for p in body["problems"]), (method, url, value, body)
                    checked.add((method.upper(), template, f"query.{param['name']}"))
                for field in _body_timestamps(doc, op):
                    for value in NOT_TIMESTAMPS:
                        resp = await api.request(method, url, json={field: value})
                        body = await fails(resp, 422, "invalid_request")
                        assert any(p.startswith(f"body.{field}:") and "ISO 8601" in p
                                   for p in body["problems"]), (method, url, value, body)
                    checked.add((method.upper(), template, f"body.{field}"))
        # The walk found every time a client sends (it would pass vacuously otherwise).
        assert {("GET", "/v1/events", "query.from"), ("GET", "/v1/consumers/{consumer_number}/billing", "query.to"),
                ("POST", "/v1/meters", "body.installed_at"), ("PATCH", "/v1/meters/{meter_id}", "body.installed_at"),
                ("POST", "/v1/meters/{meter_id}/assignments", "body.start"),
                ("POST", "/v1/readings/verify", "body.ts")} <= checked, sorted(checked)
        # A number in a CSV file's installed_at is refused in the row's report as well.
        csv = "meter_id,utility,protocol,installed_at\nM-0950,water,mqtt,1700000000\n"
        report = await ok(api.post("/v1/meters/import", content=csv, headers={"content-type": "text/csv"}), 422)
        assert "installed_at" in report["rows"][0]["error"] and "ISO 8601" in report["rows"][0]["error"], report
        # ISO 8601 with a zone is taken as before.
        await ok(api.post("/v1/meters", json={"meter_id": "M-0951", "utility": "water", "protocol": "mqtt",
                                              "installed_at": "2026-01-05T08:00:00+02:00"}), 201)
        await ok(api.get("/v1/events", params={"from": "2026-01-01T00:00:00Z", "to": "2026-02-01 00:00:00+00:00"}))
