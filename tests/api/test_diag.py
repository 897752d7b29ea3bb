"""The technicians' diagnostics API over a running gateway with real simulated meters behind it:
a healthy meter, one that times out, one answering Modbus exception codes, PAYG meters on a real
broker (one sending garbage). Every endpoint, its scope, and what it says about each meter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import publish_balance
from storage.keys import Scope
from tests.browser.diag_setup import make_key, running
from tests.fixtures.gateway import eventually, gateway_config
from tests.fixtures.shown import shown_float32

GOOD = {"ts": "2026-11-01T10:00:00Z", "balance": "42.50", "currency": "KES", "relay": "connected"}


def faulty_fleet(**kw: Any) -> SimFleet:
    """M-0001 answers, M-0002 never answers (timeout), M-0003 answers exception 2 (illegal data address)."""
    fleet = SimFleet(load_profiles()["generic"], 3, seed=3, speedup=60, **kw)
    fleet.set_fault("M-0002", "timeout")
    fleet.set_fault("M-0003", "exception")
    return fleet


async def test_fleet_status_meters_payloads_deadletters_and_events(tmp_path: Path, mqtt_broker: Broker) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text("# the file the gateway reports and hashes\n")
    async with faulty_fleet() as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=0.2,
                             broker_port=mqtt_broker.port, payg_ids=["P-0001", "P-0002", "P-0003"])
        async with running(cfg, config_path=config_file) as (gw, api):
            auth = await make_key(gw)
            await eventually(lambda: gw.subscriber is not None and gw.subscriber.connected)
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001", GOOD)
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0002", b"{not json")

            async def settled() -> dict[str, Any] | None:
                body = (await api.get("/v1/diag/meters", headers=auth)).json()
                states = {m["meter_id"]: m["state"] for m in body["meters"]}
                want = {"M-0001": "ok", "M-0002": "lost", "M-0003": "lost", "P-0001": "ok", "P-0002": "failing",
                        "P-0003": "waiting"}
                return body if states == want else None

            fleet_body = await eventually(settled, timeout=60)

            async def events_through() -> bool:
                # The driver marks a meter lost before its comm_lost event has passed the pipeline.
                body = (await api.get("/v1/diag/events", headers=auth)).json()
                return {e["meter_id"] for e in body["items"] if e["kind"] == "comm_lost"} == {"M-0002", "M-0003"}

            await eventually(events_through)
            # Worst first; counts cover every configured meter.
            assert [m["state"] for m in fleet_body["meters"]] == ["lost", "lost", "failing", "waiting", "ok", "ok"]
            assert fleet_body["counts"] == {"ok": 2, "failing": 1, "lost": 2, "silent": 0, "waiting": 1, "inactive": 0}
            by_id = {m["meter_id"]: m for m in fleet_body["meters"]}
            assert by_id["M-0002"]["last_error_kind"] == "timeout" and "timed out" in by_id["M-0002"]["last_error"]
            assert by_id["M-0003"]["last_error_kind"] == "modbus_exception"
            assert "exception 2 (illegal data address)" in by_id["M-0003"]["last_error"]
            assert by_id["M-0001"]["last_seen"] is not None and by_id["M-0002"]["last_seen"] is None
            assert by_id["P-0002"]["last_error_kind"] == "malformed_json"
            lost = (await api.get("/v1/diag/meters", params={"state": "lost"}, headers=auth)).json()
            assert [m["meter_id"] for m in lost["meters"]] == ["M-0002", "M-0003"]

            # Gateway status: drivers with connections, rates, errors by kind; spool, sink, identity.
            status = (await api.get("/v1/diag/status", headers=auth)).json()
            assert status["version"] == __version__ and status["gateway_id"] == "test"
            assert status["config_file"] == str(config_file) and len(status["config_hash"]) == 16
            assert status["uptime_s"] >= 0 and status["storage_mode"] == "sqlite"
            assert status["ready"] is True and status["failed"] == [] and status["checks"]["broker"]["ok"] is True
            [modbus] = status["drivers"]["modbus"]
            assert modbus["endpoint"] == "sim" and modbus["connected"] is True and modbus["meters"] == 3
            assert modbus["polls_per_s"] > 0
            assert modbus["errors_by_kind"]["timeout"] >= 3 and modbus["errors_by_kind"]["modbus_exception"] >= 3
            mqtt = status["drivers"]["mqtt"]
            assert mqtt["connected"] is True and mqtt["messages"] >= 2 and mqtt["messages_per_s"] > 0
            assert mqtt["errors_by_kind"] == {"malformed_json": 1}
            assert status["meters"]["lost"] == 2
            assert status["spool"]["max_bytes"] == cfg.spool.max_bytes and 0 <= status["spool"]["fill"] < 1
            assert status["sink"]["up"] is True and status["sink"]["rows"] > 0
            assert {e["kind"] for e in status["latest_events"]} >= {"comm_lost"}

            # One Modbus meter in full.
            ok = (await api.get("/v1/diag/meters/M-0001", headers=auth)).json()
            assert ok["state"] == "ok" and ok["consecutive_failures"] == 0 and ok["breaker"] == "closed"
            assert ok["last_attempt"] and ok["last_success"] and ok["polls"] >= 3
            assert 0 < ok["latency_p50_s"] <= ok["latency_p95_s"]
            [block] = ok["last_raw"]
            assert block["function"] == 4 and block["address"] == 0 and len(block["words"]) == len(block["hex"]) > 0
            assert {r["channel"] for r in ok["recent_readings"]} >= {"energy_import", "power"}
            assert all(isinstance(r["quality"], list) and r["status"] for r in ok["recent_readings"])
            assert ok["open_events"] == []
            dead = (await api.get("/v1/diag/meters/M-0002", headers=auth)).json()
            assert dead["state"] == "lost" and dead["consecutive_failures"] >= 3 and dead["last_success"] is None
            assert dead["last_error_kind"] == "timeout" and dead["last_error_at"] is not None
            assert 3 <= dead["errors_by_kind"]["timeout"] <= dead["failures"]  # the driver counts first
            assert [e["kind"] for e in dead["open_events"]] == ["comm_lost"]
            assert dead["last_raw"] == [] and dead["latency_p50_s"] is None

            # PAYG meters: what they last said.
            payg = (await api.get("/v1/diag/meters/P-0001", headers=auth)).json()
            assert payg["protocol"] == "mqtt" and payg["state"] == "ok" and payg["messages"] == 1
            assert payg["last_balance"]["balance"] == "42.50" and payg["last_balance"]["relay"] == "connected"
            [sent] = payg["recent_payloads"]
            assert sent["topic"] == "payg/P-0001/balance" and '"42.50"' in sent["payload"]
            bad = (await api.get("/v1/diag/meters/P-0002", headers=auth)).json()
            assert bad["state"] == "failing" and bad["last_error_kind"] == "malformed_json"
            assert bad["recent_payloads"][0]["payload"] == "{not json"
            payloads = (await api.get("/v1/diag/meters/P-0002/payloads", headers=auth)).json()
            assert payloads == bad["recent_payloads"]
            assert (await api.get("/v1/diag/meters/M-9999", headers=auth)).status_code == 404

            # A good message after the bad one: the meter is ok again, the error stays on record.
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0002", GOOD)

            async def recovered() -> bool:
                body = (await api.get("/v1/diag/meters/P-0002", headers=auth)).json()
                return bool(body["state"] == "ok" and body["last_error_kind"] == "malformed_json")

            await eventually(recovered)

            # Dead letters, filtered by reason and meter, with the payload and the reason.
            dls = (await api.get("/v1/diag/deadletters", params={"reason": "malformed_json"}, headers=auth)).json()
            [dl] = dls["items"]
            assert dl["meter_id"] == "P-0002" and dl["payload"] == "{not json" and dl["source"] == "mqtt"
            assert dl["where"] == "payg/P-0002/balance" and dls["store_reachable"] is True
            by_meter = (await api.get("/v1/diag/deadletters", params={"meter_id": "P-0001"}, headers=auth)).json()
            assert by_meter["items"] == []
            assert (await api.get("/v1/diag/deadletters", params={"limit": 0}, headers=auth)).status_code == 422

            events = (await api.get("/v1/diag/events", params={"meter_id": "M-0002"}, headers=auth)).json()
            assert [e["kind"] for e in events["items"]] == ["comm_lost"]


async def test_poll_now_and_raw_reads(tmp_path: Path, mqtt_broker: Broker) -> None:
    async with faulty_fleet(update_interval=None) as fleet:  # frozen registers: reads are comparable
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=0.5,
                             broker_port=mqtt_broker.port, payg_ids=["P-0001"],
                             diag={"raw_reads_per_second": 50, "raw_read_burst": 50})
        async with running(cfg) as (gw, api):
            auth = await make_key(gw)
            polled = await api.post("/v1/diag/meters/M-0001/poll", headers=auth)
            assert polled.status_code == 200, polled.text
            body = polled.json()
            assert body["endpoint"] == "sim" and body["unit"] == 1 and body["latency_s"] > 0
            [block] = body["raw"]
            assert block["words"] == fleet.words(1, 4, 0, len(block["words"]))
            values = {v["channel"]: v for v in body["values"]}
            # The generic map keeps energy_import as a float32 at input register 0.
            expected = shown_float32(block["words"][:2])
            assert values["energy_import"]["value"] == expected and values["energy_import"]["unit"] == "kWh"
            assert body["problems"] == []

            timeout = await api.post("/v1/diag/meters/M-0002/poll", headers=auth)
            assert timeout.status_code == 504
            assert timeout.json()["kind"] == "timeout" and "M-0002" in timeout.json()["message"]
            refused = await api.post("/v1/diag/meters/M-0003/poll", headers=auth)
            assert refused.status_code == 502
            assert refused.json()["kind"] == "modbus_exception" and refused.json()["code"] == 2
            payg = await api.post("/v1/diag/meters/P-0001/poll", headers=auth)
            assert payg.status_code == 400 and "PAYG" in payg.json()["message"]
            assert (await api.post("/v1/diag/meters/M-9999/poll", headers=auth)).status_code == 404

            raw = await api.get("/v1/diag/endpoints/sim/registers", headers=auth,
                                params={"unit": 1, "function": "input", "address": "0x0004", "count": 4})
            assert raw.status_code == 200, raw.text
            assert raw.json()["words"] == fleet.words(1, 4, 4, 4) and raw.json()["address"] == 4
            assert raw.json()["hex"] == [f"{w:#06x}" for w in fleet.words(1, 4, 4, 4)]
            silent = await api.get("/v1/diag/endpoints/sim/registers", headers=auth,
                                   params={"unit": 2, "function": "input", "address": 0, "count": 2})
            assert silent.status_code == 504 and silent.json()["kind"] == "timeout"
            bad: tuple[tuple[dict[str, str | int], int], ...] = (
                ({"unit": 1, "address": 0, "count": 126}, 422),  # more than one request may carry
                ({"unit": 1, "address": 0, "count": 2, "function": "coil"}, 422),  # read-only codes only
                ({"unit": 0, "address": 0, "count": 2}, 422),
                ({"unit": 1, "address": "zz", "count": 2}, 400),
                ({"unit": 1, "address": "0xffff", "count": 2}, 400),  # past the last register
            )
            for params, code in bad:
                resp = await api.get("/v1/diag/endpoints/sim/registers", headers=auth, params=params)
                assert resp.status_code == code, (params, resp.text)
                assert resp.json()["message"]
            missing = await api.get("/v1/diag/endpoints/nowhere/registers", headers=auth,
                                    params={"unit": 1, "address": 0})
            assert missing.status_code == 404


async def test_raw_reads_are_rate_limited_per_bus(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 2, seed=4, update_interval=None) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=2, interval=0.5,
                             diag={"raw_reads_per_second": 0.05, "raw_read_burst": 2})
        async with running(cfg) as (gw, api):
            auth = await make_key(gw)
            params: dict[str, str | int] = {"unit": 1, "function": "input", "address": 0, "count": 2}
            first = await api.get("/v1/diag/endpoints/sim/registers", headers=auth, params=params)
            second = await api.post("/v1/diag/meters/M-0002/poll", headers=auth)  # the same bus, the same bucket
            third = await api.get("/v1/diag/endpoints/sim/registers", headers=auth, params=params)
            assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
            assert third.json()["error"] == "rate_limited" and "endpoint sim" in third.json()["message"]
            assert 1 <= int(third.headers["Retry-After"]) <= 21
            # The gateway's own schedule is not limited: it goes on polling.
            polls = gw.pollers["sim"].health()["M-0001"].polls
            await eventually(lambda: gw.pollers["sim"].health()["M-0001"].polls > polls)


async def test_scopes_and_open_endpoints(tmp_path: Path) -> None:
    async with SimFleet(load_profiles()["generic"], 1, seed=5) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=1, interval=0.5)
        async with running(cfg) as (gw, api):
            diag = await make_key(gw, Scope.DIAG)
            read = await make_key(gw, Scope.READ, name="billing")
            admin = await make_key(gw, Scope.ADMIN, name="ops")
            protected = [("GET", "/v1/diag/status"), ("GET", "/v1/diag/meters"), ("GET", "/v1/diag/meters/M-0001"),
                         ("GET", "/v1/diag/meters/M-0001/payloads"), ("POST", "/v1/diag/meters/M-0001/poll"),
                         ("GET", "/v1/diag/endpoints/sim/registers?unit=1&address=0"),
                         ("GET", "/v1/diag/deadletters"), ("GET", "/v1/diag/events"), ("GET", "/status/panel"),
                         ("GET", "/metrics")]
            for method, path in protected:
                anonymous = await api.request(method, path)
                assert anonymous.status_code == 401, path
                assert anonymous.json()["error"] == "unauthorized" and "diag" in anonymous.json()["message"]
                wrong = await api.request(method, path, headers=read)
                assert wrong.status_code == 403, path
                assert "lacks scope 'diag'" in wrong.json()["message"]
            for headers in (diag, admin):
                assert (await api.get("/v1/diag/status", headers=headers)).status_code == 200
            # Open: liveness, readiness, the page shell (it holds no data) and its own static files.
            assert (await api.get("/healthz")).json()["status"] == "ok"
            ready = await eventually(lambda: _ready(api))
            assert ready["failed"] == [] and ready["storage_mode"] == "sqlite"
            assert set(ready["checks"]) == {"sink", "migrations", "spool"}
            shell = await api.get("/status")
            assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
            assert "M-0001" not in shell.text and 'src="/status/static/status.js"' in shell.text
            assert "http://" not in shell.text and "https://" not in shell.text  # no CDN, nothing external
            script = await api.get("/status/static/status.js")
            assert script.status_code == 200 and "sessionStorage" in script.text and "localStorage" not in script.text
            assert (await api.get("/status/static/status.css")).status_code == 200
            assert (await api.get("/status/static/..%2Fapp.py")).status_code == 404


async def _ready(api: Any) -> dict[str, Any] | None:
    resp = await api.get("/readyz")
    return resp.json() if resp.status_code == 200 else None


async def test_metrics_are_named_and_typed_as_prometheus_users_expect(tmp_path: Path, mqtt_broker: Broker) -> None:
    async with faulty_fleet() as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=0.2,
                             broker_port=mqtt_broker.port, payg_ids=["P-0001"])
        async with running(cfg) as (gw, api):
            auth = await make_key(gw)
            await eventually(lambda: gw.subscriber is not None and gw.subscriber.connected)
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001", b"[1, 2")
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001", GOOD)

            async def families() -> dict[str, Any] | None:
                text = (await api.get("/metrics", headers=auth)).text
                got = {f.name: f for f in text_string_to_metric_families(text)}
                results = {s.labels.get("result") for s in got["meter_gateway_polls"].samples}
                states = {s.labels["state"]: s.value for s in got["meter_gateway_meters"].samples}
                ready = {"ok", "timeout", "modbus_exception"} <= results and "meter_gateway_mqtt_messages" in got
                return got if ready and states["lost"] == 2 and states["ok"] == 2 else None

            got = await eventually(families, timeout=60)
    expected = {
        # name (without _total / _bucket): (type, label names)
        "meter_gateway_polls": ("counter", {"result"}),
        "meter_gateway_poll_latency_seconds": ("histogram", set()),
        "meter_gateway_mqtt_messages": ("counter", {"result"}),
        "meter_gateway_deadletters": ("counter", {"reason"}),
        "meter_gateway_readings": ("counter", {"flag"}),
        "meter_gateway_spool_items": ("gauge", set()),
        "meter_gateway_spool_oldest_age_seconds": ("gauge", set()),
        "meter_gateway_sink_batch_seconds": ("histogram", set()),
        "meter_gateway_sink_rows": ("counter", set()),
        "meter_gateway_events": ("counter", {"kind"}),
        "meter_gateway_meters": ("gauge", {"state"}),
        "meter_gateway_broker_connected": ("gauge", set()),
        "meter_gateway_modbus_endpoint_connected": ("gauge", {"endpoint"}),
    }
    for name, (kind, labels) in expected.items():
        assert name in got, f"{name} missing"
        assert got[name].type == kind, (name, got[name].type)
        seen = {k for s in got[name].samples for k in s.labels if k != "le"}
        assert seen == labels, (name, seen)
        if kind == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in got[name].samples), name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in got.values() for s in f.samples}
    assert samples[("meter_gateway_mqtt_messages_total", (("result", "deadletter"),))] == 1
    assert samples[("meter_gateway_deadletters_total", (("reason", "malformed_json"),))] == 1
    assert samples[("meter_gateway_meters", (("state", "lost"),))] == 2
    assert samples[("meter_gateway_meters", (("state", "ok"),))] == 2  # M-0001 and P-0001
    # Bounded cardinality: no per-meter label anywhere.
    assert not any("meter" in label for f in got.values() for s in f.samples for label in s.labels)
