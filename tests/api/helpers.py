"""Small helpers of the API tests."""

from __future__ import annotations

from typing import Any

import httpx

WIDE = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


async def ok(response: httpx.Response | Any, status: int = 200) -> Any:
    """The JSON body of a response that must have `status` (the body is shown when it has not)."""
    resp = await response if not isinstance(response, httpx.Response) else response
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    return resp.json()


async def fails(response: Any, status: int, error: str, *words: str) -> dict[str, Any]:
    """An error response: its status, JSON body with the error name and a message holding `words`."""
    resp = await response if not isinstance(response, httpx.Response) else response
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    body: dict[str, Any] = resp.json()
    assert body["error"] == error, body
    for word in words:
        assert word in body["message"], body
    return body


async def all_pages(api: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paginated list, following next_cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        body = await ok(api.get(path, params={**params, **({"cursor": cursor} if cursor else {})}))
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError(f"{path} did not end")


def as_reading(read: dict[str, Any]) -> dict[str, Any]:
    """A bill's or an assignment's read object without what it adds to the reading (flags,
    estimate_method): what /readings gives for the same read."""
    return {k: v for k, v in read.items() if k not in ("flags", "estimate_method")}
