"""Opaque cursors: base64url of a small JSON list, so clients never build them."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from gateway.errors import InvalidRequest


def encode_cursor(parts: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, length: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        msg = f"cursor {cursor[:40]!r} is not one this API issued"
        raise InvalidRequest(msg) from None
    if not isinstance(parts, list) or len(parts) != length:
        msg = f"cursor {cursor[:40]!r} is not one this API issued"
        raise InvalidRequest(msg)
    return parts
