"""Every list pages as {items, next_cursor} (issue 27 item 11): a meter's assignments and commands (and
the latest readings, tests/api/test_readings.py), with the bare array of before kept for one release
behind ?shape=array."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from gateway.model import Command, CommandKind, CommandStatus
from storage.base import Store
from tests.api.helpers import all_pages, fails, ok

T = datetime(2026, 3, 1, tzinfo=UTC)


async def test_assignments_are_a_page(api: httpx.AsyncClient) -> None:
    await ok(api.post("/v1/meters/M-0001/assignments",
                      json={"consumer_number": "C-901", "start": datetime.now(UTC).isoformat()}), 201)

    page = await ok(api.get("/v1/meters/M-0001/assignments"))

    assert list(page) == ["items", "next_cursor"] and page["next_cursor"] is None
    assert [a["consumer_number"] for a in page["items"]] == ["C-1", "C-901"]
    assert await ok(api.get("/v1/meters/M-0001/assignments", params={"shape": "array"})) == page["items"]
    await fails(api.get("/v1/meters/NOPE/assignments"), 404, "not_found")


async def test_commands_page_most_recent_first(api: httpx.AsyncClient, store: Store) -> None:
    sent = [Command(f"gw1-{i:04d}", "P-0001", CommandKind.TOPUP, T + timedelta(minutes=i // 2),
                    CommandStatus.ACKNOWLEDGED, Decimal("10.00"), f"rcpt-{i}") for i in range(7)]
    for command in sent:
        await store.save_command(command)

    got = await all_pages(api, "/v1/meters/P-0001/commands", limit=2)

    # Newest first; two commands share each minute, the correlation id breaks the tie.
    assert [c["correlation_id"] for c in got] == [c.correlation_id for c in reversed(sent)]
    first = await ok(api.get("/v1/meters/P-0001/commands", params={"limit": 3}))
    assert first["next_cursor"] is not None and len(first["items"]) == 3
    assert await ok(api.get("/v1/meters/P-0001/commands", params={"shape": "array"})) == got
    assert (await ok(api.get("/v1/meters/P-0002/commands")))["items"] == []
    await fails(api.get("/v1/meters/P-0001/commands", params={"cursor": "WzEsMl0"}), 400, "invalid_request",
                "cursor")
