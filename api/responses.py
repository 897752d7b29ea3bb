"""A JSON response for large pages, serialised without a second validation pass."""

from __future__ import annotations

from typing import Any

import pydantic_core
from fastapi.responses import Response


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
        return pydantic_core.to_json(content)
