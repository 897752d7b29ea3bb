"""A JSON response for large pages, serialised without a second validation pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pydantic_core
from fastapi.responses import Response

T = TypeVar("T")
#: Items turned into JSON between hand-backs of the event loop (a few milliseconds of Python).
RENDER_PART = 1000


class PageJSON(Response):
    """JSON of plain dicts, lists, datetimes and decimals, as pydantic writes them.

    Routes returning many readings build their body from the same dict builders the
    response models are checked against (api.schemas), and return it in this: FastAPI
    would otherwise validate every row against the model again before serialising it,
    which took about a third of a feed page's time. The route keeps `response_model=` for
    the OpenAPI document, and the contract test checks the bodies against it.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else pydantic_core.to_json(content)

    @classmethod
    async def page(cls, items: Sequence[T], to_dict: Callable[[T], dict[str, Any]], **fields: Any) -> PageJSON:
        """{"items": [to_dict(item), ...], **fields}, made RENDER_PART items at a time with the event
        loop handed back between: a page of 10,000 readings is tens of milliseconds of Python, and
        the pollers and every other request share the loop. A small page is one step, as before."""
        parts = []
        for start in range(0, len(items), RENDER_PART):
            if start:
                await asyncio.sleep(0)
            parts.append(pydantic_core.to_json([to_dict(i) for i in items[start:start + RENDER_PART]])[1:-1])
        rest = pydantic_core.to_json(fields)[1:-1]
        return cls(b'{"items":[' + b",".join(parts) + b"]" + (b"," + rest if rest else b"") + b"}")
