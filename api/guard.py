"""RequestGuard: a request's body is bounded, and its key checked, before anything reads the body.

FastAPI reads and parses a JSON body before it solves a route's dependencies, so a route's
RequireScope alone would let a client without a key make the API hold whatever it sends.
For every request that carries a body (Content-Length above 0, or Transfer-Encoding), the
guard finds the route the router will pick (the same routes, in the same order) and:

1. answers 413 at once when Content-Length is above the route's limit (BodyLimit, else the
   default for JSON routes);
2. for a route that needs a key (a RequireScope among its dependencies): answers 401 or 403
   unless the bearer key is valid and has the scopes, without reading a byte of the body, and
   leaves the key's row in the scope for RequireScope (one lookup, not two);
3. counts the body while the app reads it, and answers 413 the moment it passes the limit.

An answer given before the body was read to its end closes the connection when the rest is
long or of unknown length (chunked), so the server does not go on reading a body nobody wants;
a rest of at most DRAIN_MAX bytes is read and dropped by the server instead (never kept), so a
client that sent a little too much reads its 413 rather than a reset connection. Requests
without a body pass straight through: their key is checked by RequireScope as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import AUTHENTICATED, KeyRefused, RequireScope, authenticate, authorize, bearer_token
from api.errors import error_body, unavailable
from api.methods import http_routes, route_path
from gateway.errors import SinkUnavailable
from storage.keys import Scope as KeyScope

#: Answers given before a long body was read to its end: the server must not drain the rest.
_CLOSE = {"Connection": "close"}
#: The most of an unwanted body the server may read (and drop) to keep the connection.
DRAIN_MAX = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """Dependency that declares its route's largest request body in bytes (RequestGuard enforces it
    while the body streams); routes without one get the app's JSON default."""

    max_bytes: int

    async def __call__(self) -> None:
        return None


class BodyTooLarge(HTTPException):
    """413: the body is (or says it will be) larger than `limit` bytes."""

    def __init__(self, limit: int, route: str) -> None:
        msg = f"the request body is larger than {limit:,} bytes, the limit of {route}"
        super().__init__(status_code=413, detail=msg, headers=dict(_CLOSE))
        self.limit = limit


@dataclass(frozen=True, slots=True)
class _Policy:
    """What the guard needs to know of one route."""

    regex: re.Pattern[str]
    methods: frozenset[str]
    scopes: tuple[KeyScope, ...]
    max_bytes: int
    label: str

    def takes(self, method: str, path: str) -> bool:
        return method in self.methods and self.regex.match(path) is not None


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dep in dependant.dependencies:
        yield dep.call
        yield from _calls(dep)


def policies(routes: Sequence[BaseRoute], default_max: int) -> list[_Policy]:
    """One policy per HTTP route, in the router's order: the scopes its RequireScope dependencies
    ask for and its BodyLimit (else `default_max`)."""
    out = []
    for route in http_routes(routes):
        scopes: list[KeyScope] = []
        max_bytes = default_max
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant):
            for call in _calls(dependant):
                if isinstance(call, RequireScope) and call.scope not in scopes:
                    scopes.append(call.scope)
                elif isinstance(call, BodyLimit):
                    max_bytes = call.max_bytes
        methods = frozenset(route.methods)
        out.append(_Policy(route.path_regex, methods, tuple(scopes), max_bytes, f"{'/'.join(sorted(methods))} "
                           f"{route.path}"))
    return out


def _body_headers(scope: Scope) -> tuple[bool, int | None, str | None]:
    """(has a body, its declared length, the Authorization header)."""
    length: int | None = None
    streamed = False
    authorization = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                streamed = True  # the server would refuse it; let it
        elif name == b"transfer-encoding":
            streamed = True
        elif name == b"authorization" and authorization is None:  # the first, as Starlette's Headers.get
            authorization = value.decode("latin-1")
    return streamed or bool(length), length, authorization


class RequestGuard:
    """Pure ASGI middleware; see the module's docstring. The key cache and store come from the
    app's state (scope["app"]), the routes from the app it guards."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], default_max: int) -> None:
        self.app = app
        self.default_max = default_max
        self._policies = policies(routes, default_max)

    def _policy(self, method: str, path: str) -> _Policy | None:
        for policy in self._policies:
            if policy.takes(method, path):
                return policy
        return None  # the router answers 404 or 405 without reading the body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body, length, authorization = _body_headers(scope)
        if not has_body:
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], route_path(scope)
        policy = self._policy(method, path)
        limit = policy.max_bytes if policy is not None else self.default_max
        label = policy.label if policy is not None else "this gateway's routes"
        close = length is None or length > DRAIN_MAX
        if length is not None and length > limit:
            await _answer(scope, send, 413, error_body("body_too_large", BodyTooLarge(limit, label).detail),
                          close=close)
            return
        if policy is not None and policy.scopes:
            try:
                state = scope["app"].state
                row = await authenticate(bearer_token(authorization), state.key_cache, state.store, path=path,
                                         scope=policy.scopes[0])
                for needed in policy.scopes:
                    authorize(row, needed, method=method, path=path)
            except KeyRefused as exc:
                name = "unauthorized" if exc.status == 401 else "forbidden"
                await _answer(scope, send, exc.status, error_body(name, exc.message), exc.headers, close=close)
                return
            except SinkUnavailable as exc:
                response = unavailable(exc)
                if close:
                    response.headers.update(_CLOSE)
                await response(scope, receive, send)
                return
            scope[AUTHENTICATED] = row
        await _BoundedBody(self.app, limit, label, length)(scope, receive, send)


class _BoundedBody:
    """One request: counts its body as the app reads it; 413 past `limit`."""

    def __init__(self, app: ASGIApp, limit: int, label: str, length: int | None) -> None:
        self.app = app
        self.limit = limit
        self.label = label
        self.length = length
        self.received = 0
        self.complete = False  # the whole body was read
        self.exceeded = False
        self.started = False
        self.replaced = False  # the app's own answer was dropped for our 413

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            if self.exceeded:
                raise BodyTooLarge(self.limit, self.label)
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                self.complete = not message.get("more_body", False)
                if self.received > self.limit:
                    self.exceeded = True
                    raise BodyTooLarge(self.limit, self.label)
            return message

        async def guarded(message: Message) -> None:
            if self.replaced:
                return
            if message["type"] == "http.response.start":
                self.started = True
                if self.exceeded and message["status"] != 413:
                    # The app caught the 413 and answered something else (a generic 400, say).
                    self.replaced = True
                    await _answer(scope, send, 413, error_body("body_too_large",
                                                               BodyTooLarge(self.limit, self.label).detail))
                    return
                headers = list(message.get("headers", ()))
                if not self.complete and (self.length is None or self.length - self.received > DRAIN_MAX) \
                        and all(name.lower() != b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge as exc:
            if self.started:
                raise
            await _answer(scope, send, 413, error_body("body_too_large", str(exc.detail)))


async def _answer(scope: Scope, send: Send, status: int, body: dict[str, str],
                  headers: dict[str, str] | None = None, *, close: bool = True) -> None:
    async def nothing() -> Message:  # never called: a JSONResponse does not read the request
        return {"type": "http.disconnect"}

    response = JSONResponse(status_code=status, content=body, headers={**(headers or {}), **(_CLOSE if close else {})})
    await response(scope, nothing, send)

