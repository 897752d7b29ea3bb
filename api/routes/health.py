from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import RequireScope
from api.deps import GatewayDep, StoreDep
from api.schemas.common import error
from gateway import __version__
from gateway.errors import GatewayError
from storage.keys import Scope

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving requests."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses={503: {"description": "A check failed; the body says which"}})
async def readyz(store: StoreDep, gateway: GatewayDep) -> JSONResponse:
    """Ready when the sink is reachable, migrations are applied, the broker is connected (if used) and the
    spool is below its warning level. The body names the failed checks and the storage mode."""
    if gateway is not None:
        body: dict[str, Any] = await gateway.readiness()
    else:
        try:
            await store.ping()
            body = {"ready": True, "failed": [], "checks": {"sink": {"ok": True, "detail": "reachable"}}}
        except GatewayError as exc:
            body = {"ready": False, "failed": ["sink"], "checks": {"sink": {"ok": False, "detail": str(exc)}}}
        body["storage_mode"] = store.mode
    return JSONResponse(status_code=200 if body["ready"] else 503, content=body)


@router.get("/metrics", response_class=Response, dependencies=[Depends(RequireScope(Scope.DIAG))],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: error("No valid API key"),
                       403: error("The key lacks the diag scope")})
async def metrics(request: Request, gateway: GatewayDep) -> Response:
    """Prometheus metrics (meter_gateway_* series)."""
    body = (await gateway.metrics_text()) if gateway is not None else b""
    body += request.app.state.admission.metrics_text()
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
