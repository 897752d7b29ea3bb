"""How pushed balance payloads are laid out: canonical fields and the JSON pointers that find them.

Vocabulary shared by the configuration (which checks a mapping when it loads) and the normaliser
(which reads payloads with it); the parsing itself is `gateway.normalise.payload`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

#: Canonical field → JSON pointer in the default layout.
DEFAULT_MAPPING: Mapping[str, str] = {
    "ts": "/ts",
    "balance": "/balance",
    "currency": "/currency",
    "emergency_credit": "/emergency_credit",
    "emergency_credit_in_use": "/emergency_credit_in_use",
    "debt": "/debt",
    "relay": "/relay",
    "last_topup_amount": "/last_topup/amount",
    "last_topup_ts": "/last_topup/ts",
}


def split_pointer(pointer: str) -> tuple[str, ...]:
    """A JSON pointer (RFC 6901) as its reference tokens; ValueError if it does not start with '/'."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        msg = f"JSON pointer {pointer!r} must start with '/'"
        raise ValueError(msg)
    return tuple(part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/"))


def resolve_mapping(mapping: Mapping[str, str] | None) -> dict[str, str]:
    """DEFAULT_MAPPING overridden by `mapping`; ValueError on an unknown field or a bad pointer.

    A bad mapping is a configuration bug, not bad data, hence ValueError and not PayloadError.
    """
    fields = dict(DEFAULT_MAPPING)
    if mapping:
        unknown = sorted(set(mapping) - set(DEFAULT_MAPPING))
        if unknown:
            msg = f"unknown canonical field(s) in mapping: {', '.join(unknown)} (known: {', '.join(DEFAULT_MAPPING)})"
            raise ValueError(msg)
        for pointer in mapping.values():
            split_pointer(pointer)
        fields.update(mapping)
    return fields


@dataclass(frozen=True, slots=True)
class PayloadLayout:
    """How the payloads of one topic template are written, as a driver's settings declare it
    (the normaliser builds its `PayloadFormat` from this)."""

    template: str
    format: str = "json"  # "json" | "number"
    mapping: Mapping[str, str] = field(default_factory=dict)
    timestamp: str = "auto"  # "auto" | "iso8601" | "epoch_s" | "epoch_ms" | "received"
    max_bytes: int = 16384
    max_future: timedelta = timedelta(minutes=5)


__all__ = ["DEFAULT_MAPPING", "PayloadLayout", "resolve_mapping", "split_pointer"]
