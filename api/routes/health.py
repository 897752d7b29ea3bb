from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import GatewayDep, StoreDep
from gateway import __version__
from gateway.errors import GatewayError

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving requests."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: {"description": "A check failed; the body says which"}})
async def readyz(store: StoreDep, gateway: GatewayDep) -> JSONResponse:
    """Ready when the sink is reachable, the broker connected (if used) and the spool below its warning level."""
    if gateway is not None:
        body: dict[str, Any] = gateway.readiness()
    else:
        try:
            await store.ping()
            body = {"ready": True, "checks": {"sink": {"ok": True, "detail": "reachable"}}}
        except GatewayError as exc:
            body = {"ready": False, "checks": {"sink": {"ok": False, "detail": str(exc)}}}
        body["storage_mode"] = store.mode
    return JSONResponse(status_code=200 if body["ready"] else 503, content=body)
