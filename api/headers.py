"""SecurityHeaders: every answer says `X-Content-Type-Options: nosniff`, and one that sets no
`Cache-Control` of its own says `no-store` (API answers hold meter data and are asked for with
keys: no browser or proxy may keep them). Errors included: the middleware sits outside the
routes, the guard and the host check; the 500 handler (outside every middleware) adds them itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Also added by api.errors to the answers made outside the middleware stack.
SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_RAW = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """Pure ASGI middleware adding SECURITY_HEADERS where the response has not set them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in _RAW if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
