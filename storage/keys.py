"""API keys: the key format, its hash, scopes. The stores keep only `ApiKey` rows (hashes).

A key reads `mgw_<id>_<secret>`: `id` is a short public handle (shown by `keys list`,
used by `keys revoke` and in logs), `secret` 32 random bytes in base64url. Only the
SHA-256 of the whole key is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

PREFIX = "mgw"
_KEY = re.compile(r"^mgw_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    """What a key may do. `admin` implies every other scope."""

    READ = "read"
    WRITE = "write"
    DIAG = "diag"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never the secret, only its hash."""

    key_id: str
    name: str
    hash: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None = None

    def allows(self, scope: Scope) -> bool:
        return self.revoked_at is None and (scope in self.scopes or Scope.ADMIN in self.scopes)


def hash_key(key: str) -> str:
    # A plain SHA-256 is enough here, and no slow password hash (bcrypt, scrypt) is
    # needed: the key has 256 random bits, so there is no dictionary to try, and a fast
    # hash keeps the per-request check in microseconds.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, scopes: frozenset[Scope], created_at: datetime) -> tuple[str, ApiKey]:
    """A fresh key: (the key to show once, the row to store)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    key_id = "".join(secrets.choice(alphabet) for _ in range(8))
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return key, ApiKey(key_id=key_id, name=name, hash=hash_key(key), scopes=scopes, created_at=created_at)


def key_id_of(key: str) -> str | None:
    """The public id of a well-formed key, None if `key` is not one this gateway issues."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def matches(key: str, stored: ApiKey) -> bool:
    """Constant-time comparison of `key` with the stored hash."""
    return hmac.compare_digest(hash_key(key), stored.hash)


def parse_scopes(text: str) -> frozenset[Scope]:
    """Scopes from the stored space-separated text (unknown names are ignored)."""
    known = {s.value: s for s in Scope}
    return frozenset(known[s] for s in text.split() if s in known)


def format_scopes(scopes: frozenset[Scope]) -> str:
    return " ".join(sorted(s.value for s in scopes))
