"""One place that maps errors to HTTP: JSON with a message, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.headers import SECURITY_HEADERS
from api.methods import MethodTable, route_path
from gateway.errors import (
    CoreUnavailable,
    GatewayError,
    InvalidField,
    InvalidPeriod,
    InvalidRequest,
    KeyConflict,
    NotFound,
    SinkUnavailable,
)
from storage.records import Conflict

log = logging.getLogger(__name__)


def error_body(error: str, message: str, where: str | None = None) -> dict[str, str]:
    body = {"error": error, "message": message}
    if where:
        body["where"] = where
    return body


def unavailable(exc: SinkUnavailable) -> JSONResponse:
    """503: the store cannot be reached now (try again)."""
    return JSONResponse(status_code=503, headers={"Retry-After": "5"},
                        content=error_body("storage_unavailable", f"the store cannot be reached now: {exc}"))


def _router_message(request: Request, status: int, methods: MethodTable) -> str:
    """The router's own 404 / 405, said with the path and what would work."""
    path = route_path(request.scope)
    if status == 405:
        return f"{request.method} is not allowed on {path}; allowed: {methods.allow_header(path)}"
    if len(path) > 1 and path.endswith("/") and methods.allowed(path.rstrip("/")):
        return f"nothing at {path}: did you mean {path.rstrip('/')} (without the trailing slash)?"
    return f"nothing at {path} (the routes are listed at /docs)"


def install(app: FastAPI, methods: MethodTable) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse(status_code=422, content={
            **error_body("invalid_request", "; ".join(problems) or "invalid request"),
            "problems": problems,
        })

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 413: "body_too_large"}
        headers = dict(getattr(exc, "headers", None) or {})
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            message = _router_message(request, exc.status_code, methods)
        if exc.status_code == 405:
            # The router lists the methods of the first route that matched the path only.
            headers["Allow"] = methods.allow_header(route_path(request.scope))
        return JSONResponse(status_code=exc.status_code, headers=headers or None,
                            content=error_body(names.get(exc.status_code, "http_error"), message))

    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> JSONResponse:
        # Handlers are looked up along the MRO, so this covers the whole GatewayError tree.
        if isinstance(exc, NotFound):
            return JSONResponse(status_code=404, content=error_body("not_found", str(exc)))
        if isinstance(exc, Conflict | KeyConflict):
            return JSONResponse(status_code=409, content=error_body("conflict", str(exc)))
        if isinstance(exc, InvalidPeriod):
            return JSONResponse(status_code=422, content=error_body("invalid_request", str(exc), f"query.{exc.field}"))
        if isinstance(exc, InvalidField):
            # As the validation handler says it: where, and the problem under `problems`.
            return JSONResponse(status_code=422, content={
                **error_body("invalid_request", str(exc), exc.field), "problems": [str(exc)]})
        if isinstance(exc, InvalidRequest):
            return JSONResponse(status_code=400, content=error_body("invalid_request", str(exc)))
        if isinstance(exc, SinkUnavailable):
            return unavailable(exc)
        if isinstance(exc, CoreUnavailable):
            return JSONResponse(status_code=503, headers={"Retry-After": "2"},
                                content=error_body("core_unavailable", str(exc)))
        log.error("request failed: %s", exc)
        return JSONResponse(status_code=503, content=error_body("gateway_error", str(exc)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s %s", request.method, request.url.path)
        # Starlette answers this one outside every middleware: the headers are added here.
        return JSONResponse(status_code=500, headers=SECURITY_HEADERS, content=error_body(
            "internal_error", "the gateway failed to answer this request; the error is in its log"))
