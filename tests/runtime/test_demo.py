"""The demo as a technician first meets it: `meter-gateway demo` prints the status page's address
and an admin key that opens it, and some of its meters misbehave on purpose, so the status page,
the events and VEE show something at first sight (issue 16, item 3)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.gateway import eventually

KEY = r"(mgw_[A-Za-z0-9_-]+)"


@contextlib.asynccontextmanager
async def demo(data_dir: Path) -> AsyncIterator[tuple[dict[str, str], asyncio.subprocess.Process]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--port", "0", "--data-dir", str(data_dir), "--interval", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any("Press Ctrl-C" in line for line in printed):
                line = (await proc.stdout.readline()).decode()
                if not line:
                    pytest.fail("the demo ended before it was running:\n" + "".join(printed))
                printed.append(line)
        text = "".join(printed)
        found = {
            "status": re.search(r"status page:\s+(http://\S+/status)\b", text),
            "metrics": re.search(r"metrics:\s+(http://\S+/metrics)\b", text),
            "read": re.search(r"read API key:\s+" + KEY, text),
            "admin": re.search(r"admin API key:\s+" + KEY, text),
        }
        missing = [name for name, m in found.items() if m is None]
        assert not missing, f"the demo did not print {missing}:\n{text}"
        printed_values = {name: m.group(1) for name, m in found.items() if m is not None}
        printed_values["text"] = text
        # Keep reading its log, so a full pipe never blocks the demo.
        drain = asyncio.create_task(proc.stdout.read())
        yield printed_values, proc
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_the_demo_prints_the_status_page_and_a_key_that_opens_it_and_shows_faults(tmp_path: Path) -> None:
    async with demo(tmp_path / "demo") as (printed, proc):
        base = printed["status"].removesuffix("/status")
        admin = {"Authorization": f"Bearer {printed['admin']}"}
        read = {"Authorization": f"Bearer {printed['read']}"}
        assert "on purpose" in printed["text"]
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            assert (await api.get("/status")).status_code == 200
            panel = await api.get("/status/panel", headers=admin)
            assert panel.status_code == 200 and "M-0003" in panel.text
            assert (await api.get(printed["metrics"], headers=admin)).status_code == 200
            # The read key is what an account system gets; it does not open the technician's side.
            assert (await api.get("/status/panel", headers=read)).status_code == 403

            async def events(kind: str, meter_id: str) -> list[dict[str, Any]]:
                r = await api.get("/v1/events", params={"kind": kind, "meter_id": meter_id}, headers=read)
                return r.json()["items"] if r.status_code == 200 else []

            # The meter that never answers is lost, the one whose register goes backwards is flagged by VEE,
            # and the PAYG meter is at low credit.
            assert await eventually(lambda: events("comm_lost", "M-0003"), timeout=60)
            assert await eventually(lambda: events("anomaly", "M-0002"), timeout=60)
            assert await eventually(lambda: events("low_credit", "P-0001"), timeout=60)
        assert proc.returncode is None, "the demo stopped while it was being looked at"
