"""Which methods a path is served with: the `Allow` of OPTIONS and of 405, from the routes themselves.

The router answers a method it has no route for with 405 and the methods of the *first* route
whose path matched, and OPTIONS with 405 too. Here a path's methods are those of every route
whose path matches it, which for a documented path are exactly the OpenAPI document's
methods for it (FastAPI's routes serve no HEAD: it is neither served nor listed), plus
OPTIONS, which this module answers with 204 for any path the app serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send


def http_routes(routes: Sequence[BaseRoute]) -> Iterator[Any]:
    """Every route with a path and methods, in the order the router tries them, each with
    `path`, `path_regex`, `methods` and (FastAPI's) `dependant`."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before 0.160 copies an included router's routes into the app's
        flat: Iterable[Any] = routes
    else:  # later ones keep the router as one node, walked here
        flat = iter_route_contexts(routes)
    for route in flat:
        if getattr(route, "path_regex", None) is not None and getattr(route, "methods", None) is not None:
            yield route


class MethodTable:
    """Paths (as the routes' regular expressions) and the methods each route takes."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes: list[tuple[re.Pattern[str], frozenset[str]]] = [
            (route.path_regex, frozenset(route.methods)) for route in http_routes(routes)
        ]

    def allowed(self, path: str) -> frozenset[str]:
        """Every method some route serves `path` with (empty: no route has this path)."""
        methods: set[str] = set()
        for regex, route_methods in self._routes:
            if regex.match(path):
                methods |= route_methods
        return frozenset(methods)

    def allow_header(self, path: str) -> str:
        """`Allow` for `path`: its methods and OPTIONS, in a stable order."""
        return ", ".join(sorted(self.allowed(path) | {"OPTIONS"}))


class OptionsResponder:
    """Pure ASGI middleware: OPTIONS on a path the app serves is answered 204 with its `Allow`
    (no key needed: the OpenAPI document says as much); anything else passes through."""

    def __init__(self, app: ASGIApp, table: MethodTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and self.table.allowed(path := route_path(scope)):
            await send({"type": "http.response.start", "status": 204,
                        "headers": [(b"allow", self.table.allow_header(path).encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


def route_path(scope: Scope) -> str:
    """What Starlette's router matches: the path below the app's root_path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
