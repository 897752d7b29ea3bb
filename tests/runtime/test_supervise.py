"""A driver that crashes is restarted with backoff, without taking the process down."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from gateway.backoff import Backoff
from gateway.runtime.supervise import supervise


async def test_crashing_driver_is_restarted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    done = asyncio.Event()

    async def driver() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        done.set()
        await asyncio.Event().wait()  # a healthy driver runs until cancelled

    caplog.set_level(logging.ERROR)
    task = asyncio.create_task(supervise("fake", driver, backoff=Backoff(0.01, 0.05)))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert runs == 3
    crashes = [r for r in caplog.records if "driver fake crashed" in r.getMessage()]
    assert len(crashes) == 2 and crashes[0].exc_info is not None


async def test_cancellation_stops_supervision() -> None:
    started = asyncio.Event()

    async def driver() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("fake", driver))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
