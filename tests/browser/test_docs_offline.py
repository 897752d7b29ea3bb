"""/docs and /redoc render in a real headless Chromium with the network cut: every request that is
not to the gateway's own 127.0.0.1 origin is aborted, and none may be needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, Request, Route, async_playwright

from tests.browser.test_status_page import CHROMIUM, CHROMIUM_ARGS, OUTPUT, WAIT_MS
from tests.fixtures.gateway import gateway_config, running_gateway

REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


class CutNetwork:
    """Aborts every request outside `origin`; records them, and the page's errors (CSP included)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.aborted: list[str] = []
        self.problems: list[str] = []

    async def attach(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.problems.append(str(exc)))
        page.on("console", lambda msg: self.problems.append(msg.text) if msg.type == "error" else None)
        await page.route("**/*", self._route)

    async def _route(self, route: Route, request: Request) -> None:
        if request.url.startswith(f"{self.origin}/"):
            await route.continue_()
        else:
            self.aborted.append(request.url)
            await route.abort("internetdisconnected")


@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
async def test_the_api_docs_render_with_no_network(tmp_path: Path, page_path: str) -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: bootstrap.sh test installs Debian's chromium package"
    async with running_gateway(gateway_config(tmp_path / "gw")) as (gw, client), async_playwright() as pw:
        assert gw.api_url is not None
        operations = {(path, method) for path, ops in (await client.get("/openapi.json")).json()["paths"].items()
                      for method in ops}
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            net = CutNetwork(gw.api_url)
            await net.attach(page)
            response = await page.goto(f"{gw.api_url}{page_path}")
            assert response is not None and response.status == 200
            assert "script-src 'self';" in (response.headers.get("content-security-policy") or "")
            if page_path == "/docs":
                # Swagger UI: one block per operation of the document, path and method shown.
                await page.wait_for_selector(".opblock", timeout=WAIT_MS)
                shown = await page.eval_on_selector_all(
                    ".opblock", "els => els.map(e => [e.querySelector('.opblock-summary-path').dataset.path,"
                                " e.querySelector('.opblock-summary-method').textContent.toLowerCase()])")
                assert {(p, m) for p, m in shown} == operations
                assert await page.locator(".btn.authorize").count() == 1  # keys can be tried from the page
            else:
                # ReDoc: a section per operation, and the document's title.
                await page.wait_for_selector('[data-section-id^="operation/"]', timeout=WAIT_MS)
                await page.wait_for_function("document.querySelectorAll('[data-section-id^=\"operation/\"]')"
                                             f".length >= {len(operations)}", timeout=WAIT_MS)
                assert "meter-gateway" in await page.inner_text("h1")
                # ReDoc always shows Redocly's logo from their CDN; the CSP blocks it (even online:
                # no third party learns of the page) and ReDoc drops the image when it fails.
                await page.wait_for_selector(f'img[src="{REDOCLY_LOGO}"]', state="detached", timeout=WAIT_MS)
            shot = tmp_path / f"{page_path.strip('/')}.png"
            await page.screenshot(path=str(shot))
            OUTPUT.mkdir(exist_ok=True)
            shot.replace(OUTPUT / shot.name)
        finally:
            await browser.close()
    assert net.aborted == [], f"{page_path} needed resources from outside the gateway: {net.aborted}"
    problems = [p for p in net.problems if not (page_path == "/redoc" and REDOCLY_LOGO in p and "img-src" in p)]
    assert problems == [], f"{page_path}: script errors or Content-Security-Policy violations: {net.problems}"
