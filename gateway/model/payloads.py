"""How pushed balance payloads are laid out: canonical fields and the JSON pointers that find them.

Vocabulary shared by the configuration (which checks a mapping when it loads) and the normaliser
(which reads payloads with it); the parsing itself is `gateway.normalise.payload`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

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


#: Fields whose words a vendor chooses, and the canonical words they map to (value_maps).
MAPPABLE: Mapping[str, tuple[str, ...]] = {
    "relay": ("connected", "disconnected"),
    "emergency_credit_in_use": ("true", "false"),
}
#: Money fields a vendor may send in minor units (scales: balance = 0.01 turns 12345 into 123.45).
SCALABLE: tuple[str, ...] = ("balance", "debt", "emergency_credit", "last_topup_amount")


def value_key(raw: object) -> str | None:
    """How a payload's value is looked up in a value map: text case-insensitively and trimmed,
    booleans as "true"/"false", integers as their digits; None for anything else (objects, arrays)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, Decimal):
        return str(raw) if raw.is_finite() else None
    if isinstance(raw, str):
        return raw.strip().lower()
    return None


def resolve_value_maps(maps: Mapping[str, Mapping[str, object]] | None) -> dict[str, dict[str, str]]:
    """Field -> (vendor's word, lowercased -> canonical word); ValueError naming the field, the
    word and what it may map to. Targets may be TOML booleans for the boolean fields."""
    resolved: dict[str, dict[str, str]] = {}
    problems = []
    for name, words in (maps or {}).items():
        allowed = MAPPABLE.get(name)
        if allowed is None:
            problems.append(f"value_maps.{name}: no such field to map (mappable: {', '.join(MAPPABLE)})")
            continue
        table: dict[str, str] = {}
        for word, target in words.items():
            canonical = value_key(target)
            if canonical not in allowed:
                problems.append(f"value_maps.{name}.{word}: maps to {target!r}, which {name} cannot be "
                                f"(one of {', '.join(allowed)})")
                continue
            key = word.strip().lower()
            if key in table and table[key] != canonical:
                problems.append(f"value_maps.{name}.{word}: repeats {key!r} (keys match case-insensitively)")
            table[key] = canonical
        resolved[name] = table
    if problems:
        raise ValueError("; ".join(problems))
    return resolved


def check_scales(scales: Mapping[str, Decimal] | None) -> dict[str, Decimal]:
    """Money field -> factor, each positive and finite; ValueError naming what is wrong."""
    problems = []
    for name, factor in (scales or {}).items():
        if name not in SCALABLE:
            problems.append(f"scales.{name}: no such money field (scalable: {', '.join(SCALABLE)})")
        elif not factor.is_finite() or factor <= 0:
            problems.append(f"scales.{name}: {factor} must be a positive number, e.g. 0.01 for cents")
    if problems:
        raise ValueError("; ".join(problems))
    return dict(scales or {})


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
    #: The vendor's words for a field's values (resolve_value_maps' shape).
    value_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: Money fields' factors (check_scales' shape).
    scales: Mapping[str, Decimal] = field(default_factory=dict)


__all__ = ["DEFAULT_MAPPING", "MAPPABLE", "SCALABLE", "PayloadLayout", "check_scales", "resolve_mapping",
           "resolve_value_maps", "split_pointer", "value_key"]
