"""Device numbers are unique per utility (issue 27 item 8) over HTTP: POST and PATCH /v1/meters, the CSV
import (against the store and within the file) and the configuration at start; each refusal names the
meter that has the number, and nothing is stored."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gateway.model import Meter, Protocol, Utility
from simulators.modbus import SimFleet
from storage.open import open_store
from tests.api.helpers import fails, ok
from tests.fixtures.gateway import gateway_config, running_gateway

CSV = {"content-type": "text/csv"}
HEADER = "meter_id,utility,protocol,device_number\n"


async def test_the_api_refuses_a_device_number_another_meter_has(api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/meters", json={"meter_id": "E-1", "utility": "electricity", "protocol": "mqtt",
                                          "device_number": "SN-0001"}), 201)
    # Another utility may have the same number.
    await ok(api.post("/v1/meters", json={"meter_id": "W-1", "utility": "water", "protocol": "mqtt",
                                          "device_number": "SN-0001"}), 201)

    body = await fails(api.post("/v1/meters", json={"meter_id": "E-2", "utility": "electricity", "protocol": "mqtt",
                                                    "device_number": "SN-0001"}), 409, "conflict",
                       "device_number 'SN-0001' (electricity) is already on meter E-1", "PATCH /v1/meters/E-1")
    assert body["message"].startswith("meter E-2: ")
    await fails(api.get("/v1/meters/E-2"), 404, "not_found")
    await ok(api.post("/v1/meters", json={"meter_id": "E-2", "utility": "electricity", "protocol": "mqtt",
                                          "device_number": "SN-0002"}), 201)
    await fails(api.patch("/v1/meters/E-2", json={"device_number": "SN-0001", "location": "moved"}), 409, "conflict",
                "meter E-2: device_number 'SN-0001' (electricity) is already on meter E-1")
    assert (await ok(api.get("/v1/meters/E-2")))["location"] is None  # the whole change was refused

    # A search by device number finds one meter of a utility.
    found = await ok(api.get("/v1/meters", params={"search": "SN-0001", "utility": "electricity"}))
    assert [m["meter_id"] for m in found["items"]] == ["E-1"]


async def test_the_csv_import_reports_each_row_whose_device_number_is_taken(api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/meters", json={"meter_id": "E-1", "utility": "electricity", "protocol": "mqtt",
                                          "device_number": "SN-0001"}), 201)
    rows = ["E-10,electricity,mqtt,SN-0001",  # the stored meter's
            "E-11,electricity,mqtt,SN-0011",
            "E-12,electricity,mqtt,SN-0011",  # line 3's
            "W-13,water,mqtt,SN-0011",  # another utility: fine
            "E-14,electricity,mqtt,"]

    report = await ok(api.post("/v1/meters/import", content=HEADER + "\n".join(rows) + "\n", headers=CSV), 422)

    assert (report["imported"], report["failed"], report["applied"]) == (0, 2, False)
    errors = {r["row"]: r["error"] for r in report["rows"] if not r["ok"]}
    assert errors == {
        2: "device_number 'SN-0001' (electricity) is already on meter E-1: give this meter another one, or clear it "
           "there first (PATCH /v1/meters/E-1 with device_number null)",
        4: "device_number 'SN-0011' (electricity) is also on line 3 (meter E-11): device numbers are unique per "
           "utility"}
    await fails(api.get("/v1/meters/E-11"), 404, "not_found")  # nothing stored
    partial = await ok(api.post("/v1/meters/import", params={"partial": "true"},
                                content=HEADER + "\n".join(rows) + "\n", headers=CSV), 201)
    assert [r["meter_id"] for r in partial["rows"] if r["added"]] == ["E-11", "W-13", "E-14"]
    assert (await ok(api.get("/v1/meters/E-11")))["device_number"] == "SN-0011"


async def test_a_configured_meter_never_takes_a_device_number_an_api_meter_has(
        tmp_path: Path, modbus_fleet: SimFleet, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    cfg = gateway_config(tmp_path / "gw", modbus_port=modbus_fleet.port, n_modbus=2)
    cfg = cfg.model_copy(update={"meters": [m.model_copy(update={"device_number": f"SN-{i:04d}"})
                                            for i, m in enumerate(cfg.meters, 1)]})
    store = await open_store("sqlite", sqlite_path=cfg.data_path(cfg.storage.sqlite_path))
    try:
        await store.migrate()
        await store.create_meters([Meter("API-1", Utility.ELECTRICITY, Protocol.MQTT, "", device_number="SN-0001")],
                                  at=datetime.now(UTC))
    finally:
        await store.close()

    with caplog.at_level(logging.WARNING, logger="gateway.runtime.gateway"):
        async with running_gateway(cfg) as (gw, api):
            await gw.store_ready.wait()
            got = {m["meter_id"]: m["device_number"] for m in (await ok(api.get("/v1/meters")))["items"]}

    # The gateway started; the configured meter is registered without the number, and the log says why.
    assert got == {"API-1": "SN-0001", "M-0001": None, "M-0002": "SN-0002"}
    [warning] = [r.getMessage() for r in caplog.records if "device_number" in r.getMessage()]
    assert warning.startswith("config meters[0].device_number: meter M-0001: device_number 'SN-0001' (electricity) "
                              "is already on meter API-1")
