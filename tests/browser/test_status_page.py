"""The status page end to end in a real headless Chromium (Debian's package, driven by Playwright).

The gateway runs with simulated Modbus meters and a real broker; the test opens /status, gives it a
key, watches a meter made to fail turn failing with its error, selects meters, stops and restarts the
broker, and saves screenshots (tmp_path, and test-output/status.png for people to look at).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from playwright.async_api import Page, async_playwright

from gateway.config.profiles import load_profiles
from simulators.broker import Broker
from simulators.modbus import SimFleet
from simulators.mqtt.payg import publish_balance
from tests.browser.diag_setup import make_key, running
from tests.fixtures.gateway import eventually, gateway_config

CHROMIUM = "/usr/bin/chromium"
#: Headless, and nothing that phones home or needs a GPU or a sandbox (tests run as root in a container).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
WAIT_MS = 30_000


async def tile_state(page: Page, meter_id: str) -> str | None:
    return await page.get_attribute(f'#grid [data-meter="{meter_id}"]', "data-state")


async def test_status_page_shows_a_failing_meter_with_its_error(tmp_path: Path, mqtt_broker: Broker) -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: bootstrap.sh test installs Debian's chromium package"
    async with SimFleet(load_profiles()["generic"], 3, seed=7, speedup=60) as fleet:
        cfg = gateway_config(tmp_path / "gw", modbus_port=fleet.port, n_modbus=3, interval=0.3,
                             broker_port=mqtt_broker.port, payg_ids=["P-0001"])
        async with running(cfg) as (gw, _api), async_playwright() as pw:
            auth = await make_key(gw)
            key = auth["Authorization"].removeprefix("Bearer ")
            await eventually(lambda: gw.subscriber is not None and gw.subscriber.connected)
            await publish_balance(mqtt_broker.host, mqtt_broker.port, "P-0001",
                                  {"ts": "2026-11-01T10:00:00Z", "balance": "12.00", "currency": "KES"})
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                requested: list[str] = []
                page.on("request", lambda request: requested.append(request.url))
                problems: list[str] = []  # script errors and Content-Security-Policy violations
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
                await page.goto(f"{gw.api_url}/status?refresh=1")

                # It asks for a key first, and keeps it in this tab's session only.
                await page.wait_for_selector("#key-form:not([hidden])", timeout=WAIT_MS)
                await page.fill("#key", "mgw_wrong000_" + "x" * 43)
                await page.click("#key-form button[type=submit]")
                error = await page.wait_for_selector("#key-error:not([hidden])", timeout=WAIT_MS)
                assert error is not None and "not known" in (await error.inner_text())
                await page.fill("#key", key)
                await page.click("#key-form button[type=submit]")
                await page.wait_for_selector('#grid [data-meter="M-0003"]', timeout=WAIT_MS)
                assert await page.evaluate("sessionStorage.getItem('meter-gateway.key')") == key
                assert await page.evaluate("localStorage.length") == 0
                assert await page.evaluate("document.cookie") == ""
                await page.wait_for_selector('#grid [data-meter="M-0002"][data-state="ok"]', timeout=WAIT_MS)
                await page.wait_for_selector('#grid [data-meter="P-0001"][data-state="ok"]', timeout=WAIT_MS)
                assert (await page.inner_text("#spool .big")).split()[0].isdigit()

                # A meter made to fail turns failing (then lost) with its error, on the tile and in detail.
                fleet.set_fault("M-0002", "timeout")
                await page.wait_for_selector('#grid [data-meter="M-0002"][data-state="lost"]', timeout=WAIT_MS)
                tile = page.locator('#grid [data-meter="M-0002"]')
                assert "timeout" in await tile.inner_text()
                assert "timed out" in (await tile.get_attribute("title") or "")
                await tile.click()
                await page.wait_for_selector('#meter[data-meter="M-0002"]', timeout=WAIT_MS)
                detail = await page.inner_text("#meter-error")
                assert "timeout" in detail and "M-0002" in detail and "timed out after 0.5 s" in detail
                # Its comm_lost event follows it through the pipeline: open on the meter, and in the list.
                await page.wait_for_selector('#meter .events li:has-text("comm_lost")', timeout=WAIT_MS)
                await page.wait_for_selector('#events td:has-text("comm_lost")', timeout=WAIT_MS)
                assert await tile_state(page, "M-0001") == "ok"  # the rest of the fleet goes on

                # A healthy meter: a chart of its recent values, switchable by channel.
                await page.click('#grid [data-meter="M-0001"]')
                await page.wait_for_selector('#meter[data-meter="M-0001"] #chart polyline', timeout=WAIT_MS)
                await page.click('#chart [data-channel="voltage_l1"]')
                await page.wait_for_selector('#chart [data-channel="voltage_l1"].on', timeout=WAIT_MS)
                points = await page.get_attribute("#chart polyline", "points") or ""
                await eventually(lambda: _more_points(page, len(points.split())))

                # The broker stops: the page says so; it comes back: the page says that too.
                await asyncio.to_thread(mqtt_broker.stop)
                await page.wait_for_selector("#broker.bad", timeout=WAIT_MS)
                await page.wait_for_selector('#health[data-ready="false"] [data-check="broker"].bad', timeout=WAIT_MS)
                await page.screenshot(path=str(tmp_path / "status-broker-down.png"), full_page=True)
                await asyncio.to_thread(mqtt_broker.start)
                await page.wait_for_selector("#broker.ok", timeout=60_000)
                await page.wait_for_selector('#health[data-ready="true"]', timeout=WAIT_MS)

                await page.click('#grid [data-meter="M-0002"]')
                await page.wait_for_selector('#meter[data-meter="M-0002"] #meter-error', timeout=WAIT_MS)
                shot = tmp_path / "status.png"
                await page.screenshot(path=str(shot), full_page=True)
                OUTPUT.mkdir(exist_ok=True)
                shutil.copyfile(shot, OUTPUT / "status.png")
                shutil.copyfile(tmp_path / "status-broker-down.png", OUTPUT / "status-broker-down.png")
                # The refused key's 401 is logged by the browser as a failed load; nothing else may be.
                assert [p for p in problems if "Failed to load resource" not in p] == []
            finally:
                await browser.close()
    # Everything the page needed came from the gateway itself: no CDN, nothing external.
    assert requested and all(url.startswith(f"{gw.api_url}/") for url in requested), requested


async def _more_points(page: Page, before: int) -> bool:
    """The chart grows as readings arrive (the panel refreshes every second)."""
    points = await page.get_attribute("#chart polyline", "points") or ""
    return len(points.split()) > before
