"""Annotated dependencies: the store, the running gateway and the clock come from app state, not globals.

They are `async def` although they never await: FastAPI runs a plain `def` dependency in a
worker thread, a hand-off that cost more than the rest of a small request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Protocol

from fastapi import Depends, Request

from api.ports import GatewayPort
from gateway.errors import InvalidRequest
from storage.base import Reader, Registry


class ApiStore(Reader, Registry, Protocol):
    """What the API uses of a store: it reads, and keeps the registry (keys, meters, assignments,
    verdicts, commands); the write path and the store's lifecycle are the runtime's."""


async def get_store(request: Request) -> ApiStore:
    store: ApiStore = request.app.state.store
    return store


async def get_gateway(request: Request) -> GatewayPort | None:
    gateway: GatewayPort | None = request.app.state.gateway
    return gateway


async def get_now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock().astimezone(UTC)


async def check_text_params(request: Request) -> None:
    """Refuse path and query values a store cannot take (NUL, undecodable bytes), with a 400
    that names the parameter instead of a database error."""
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            if isinstance(value, str) and ("\x00" in value or "\ufffd" in value or not value.isprintable()):
                msg = f"{where} parameter {name!r} contains control characters or bytes that are not UTF-8 text"
                raise InvalidRequest(msg)


StoreDep = Annotated[ApiStore, Depends(get_store)]
GatewayDep = Annotated[GatewayPort | None, Depends(get_gateway)]
NowDep = Annotated[datetime, Depends(get_now)]
