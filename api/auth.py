"""Bearer API keys and scopes: 401 without a valid key, 403 with the wrong scope.

Use as a dependency, on a router or a route::

    router = APIRouter(dependencies=[Depends(RequireScope("diag"))])

    @router.post("/x")
    async def x(key: Annotated[ApiKey, Depends(RequireScope("write"))]) -> ...: ...

The key's row comes from the store (by its public id) and is cached for a few seconds,
so a busy client costs one lookup per `ttl`, not one per request; ids the store does not
know are remembered as unknown for as long, in a bounded LRU, so a flood of made-up ids
costs one lookup per id per `ttl` and a bounded amount of memory.

A request with a body is authenticated earlier, by api.guard.RequestGuard, before anything
reads the body; it leaves the key's row in the ASGI scope and RequireScope uses that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from api.deps import ApiStore
from gateway.errors import SinkUnavailable
from storage.keys import ApiKey, Scope, format_scopes, key_id_of, matches, parse_scopes

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="An API key made with `meter-gateway keys create`")
CHALLENGE: Mapping[str, str] = {"WWW-Authenticate": "Bearer"}
#: Where RequestGuard leaves the row of a key it has checked, in the request's ASGI scope.
AUTHENTICATED = "meter_gateway.api_key"


@dataclass(slots=True)
class KeyCache:
    """Stored key rows by id, each kept for `ttl` seconds, and mirrored to a local file.

    Revoking a key (from the CLI, another process) takes effect within `ttl` seconds;
    ttl=0 looks every request up. While the store cannot be reached, the last row seen
    (in memory, else in `mirror`, a JSON file of hashes only) still answers, so a
    technician and Prometheus can reach /metrics and diagnostics exactly when the
    database is down.
    """

    ttl: float = 5.0
    mirror: Path | None = None
    #: Seconds to wait for the store before answering from the mirror: the request itself
    #: will wait for the store again, and both waits must fit in a client's timeout.
    lookup_timeout: float = 2.0
    #: Unknown ids remembered at most (the oldest are forgotten first).
    max_unknown: int = 4096
    monotonic: Callable[[], float] = time.monotonic
    _rows: dict[str, tuple[float, ApiKey]] = field(default_factory=dict)
    _unknown: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _down_until: float = 0.0
    #: One mirror write at a time: each reads the file, adds its key and writes it whole.
    _mirroring: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, store: ApiStore, key_id: str) -> ApiKey | None:
        now = self.monotonic()
        hit = self._rows.get(key_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        missed = self._unknown.get(key_id)
        if missed is not None:
            if now - missed < self.ttl:
                self._unknown.move_to_end(key_id)
                return None
            del self._unknown[key_id]
        try:
            if now < self._down_until:  # the store failed a moment ago: do not wait for it again
                raise SinkUnavailable("the store was unreachable a moment ago")
            row = await asyncio.wait_for(store.get_api_key(key_id), timeout=self.lookup_timeout)
        except (SinkUnavailable, TimeoutError) as exc:
            if now >= self._down_until:
                self._down_until = now + max(self.ttl, 1.0)
            stale = hit[1] if hit is not None else await asyncio.to_thread(self._mirrored, key_id)
            if stale is None:
                if isinstance(exc, TimeoutError):
                    msg = f"API key {key_id}: the store did not answer within {self.lookup_timeout} s"
                    raise SinkUnavailable(msg) from None
                raise
            return stale
        if row is None:
            self._remember_unknown(key_id, now)
            return None
        if self.ttl > 0:
            self._rows[key_id] = (now, row)
        if self.mirror is not None and (hit is None or hit[1] != row):
            try:
                async with self._mirroring:
                    await asyncio.to_thread(mirror_key, self.mirror, row)
            except OSError as exc:  # a full disk: the key is good, only its offline copy is late
                self._rows.pop(key_id, None)  # so the next request writes it again
                log.warning("API key %s: its local mirror %s could not be written (tried again at the "
                            "next request): %s", key_id, self.mirror, exc)
        return row

    def _remember_unknown(self, key_id: str, now: float) -> None:
        # Made-up ids are answered from here for `ttl` seconds, so a flood of them costs the
        # store one lookup per id, and at most `max_unknown` ids are kept. A key created (by
        # the CLI, in another process) just after a client tried its id works within `ttl`;
        # ids are random, so only a client that used a key before it existed meets that.
        if self.ttl <= 0 or self.max_unknown <= 0:
            return
        self._unknown[key_id] = now
        self._unknown.move_to_end(key_id)
        while len(self._unknown) > self.max_unknown:
            self._unknown.popitem(last=False)

    def _mirrored(self, key_id: str) -> ApiKey | None:
        return None if self.mirror is None else read_mirror(self.mirror).get(key_id)


def read_mirror(path: Path) -> dict[str, ApiKey]:
    """The keys mirrored in `path` (empty if it is missing or unreadable)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {k: ApiKey(key_id=k, name=v["name"], hash=v["hash"], scopes=parse_scopes(v["scopes"]),
                          created_at=datetime.fromisoformat(v["created_at"]),
                          revoked_at=datetime.fromisoformat(v["revoked_at"]) if v.get("revoked_at") else None)
                for k, v in doc.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def mirror_key(path: Path, row: ApiKey) -> None:
    """Add or replace `row` in the mirror file (written whole, then renamed: never half a file)."""
    rows = read_mirror(path)
    rows[row.key_id] = row
    doc = {k: {"name": r.name, "hash": r.hash, "scopes": format_scopes(r.scopes),
               "created_at": r.created_at.isoformat(),
               "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None} for k, r in rows.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temporary file of its own: another process (the CLI, a second API) may be writing too.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp made it 0600
            out.write(json.dumps(doc, indent=1))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class KeyRefused(Exception):
    """A request's key cannot be used: `status` 401 (no valid key) or 403 (a scope is missing)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def headers(self) -> dict[str, str] | None:
        return dict(CHALLENGE) if self.status == 401 else None

    def as_http(self) -> HTTPException:
        return HTTPException(status_code=self.status, detail=self.message, headers=self.headers)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, parsed as FastAPI's HTTPBearer does."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if authorization and token and scheme.lower() == "bearer" else None


async def authenticate(token: str | None, cache: KeyCache, store: ApiStore, *, path: str, scope: Scope) -> ApiKey:
    """The stored row of a valid, unrevoked key `token`; KeyRefused(401) saying why not.

    `path` and `scope` only shape the message for a request that sent no key.
    """
    if token is None:
        msg = (f"{path} needs an API key with scope '{scope}': send 'Authorization: Bearer <key>' "
               "(make one with `meter-gateway keys create`)")
        raise KeyRefused(401, msg)
    key_id = key_id_of(token)
    if key_id is None:
        raise KeyRefused(401, "the bearer token is not a meter-gateway API key (expected mgw_<id>_<secret>)")
    row = await cache.get(store, key_id)
    if row is None or not matches(token, row):
        raise KeyRefused(401, f"API key {key_id} is not known to this gateway")
    if row.revoked_at is not None:
        raise KeyRefused(401, f"API key {key_id} ({row.name}) was revoked at {row.revoked_at.isoformat()}")
    return row


def authorize(row: ApiKey, scope: Scope, *, method: str, path: str) -> None:
    """KeyRefused(403) unless the key allows `scope` (admin allows all)."""
    if not row.allows(scope):
        has = ", ".join(sorted(s.value for s in row.scopes)) or "none"
        msg = f"API key {row.key_id} ({row.name}) lacks scope '{scope}' needed for {method} {path}; it has: {has}"
        raise KeyRefused(403, msg)


class RequireScope:
    """Dependency: the request's bearer key, which must allow `scope` (admin allows all)."""

    def __init__(self, scope: Scope | str) -> None:
        self.scope = Scope(scope)

    async def __call__(self, request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> ApiKey:
        path = request.url.path
        row: ApiKey | None = request.scope.get(AUTHENTICATED)  # checked already by RequestGuard
        try:
            if row is None:
                token = None if credentials is None else credentials.credentials
                row = await authenticate(token, request.app.state.key_cache, request.app.state.store,
                                         path=path, scope=self.scope)
            authorize(row, self.scope, method=request.method, path=path)
        except KeyRefused as exc:
            raise exc.as_http() from None
        request.state.api_key = row
        return row


ReadKey = Annotated[ApiKey, Depends(RequireScope(Scope.READ))]
WriteKey = Annotated[ApiKey, Depends(RequireScope(Scope.WRITE))]
DiagKey = Annotated[ApiKey, Depends(RequireScope(Scope.DIAG))]
AdminKey = Annotated[ApiKey, Depends(RequireScope(Scope.ADMIN))]
