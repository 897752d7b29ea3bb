"""Annotated dependencies: the store and the running gateway come from app state, not globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.ports import GatewayPort
from storage.base import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_gateway(request: Request) -> GatewayPort | None:
    gateway: GatewayPort | None = request.app.state.gateway
    return gateway


StoreDep = Annotated[Store, Depends(get_store)]
GatewayDep = Annotated[GatewayPort | None, Depends(get_gateway)]
