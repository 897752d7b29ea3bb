"""Faults a simulated DLMS meter can be given (`--fault METER=FAULT`, repeatable, several per meter)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from simulators.dlms.meter import Secrets

FAULTS: dict[str, str] = {
    "timeout": "accepts the TCP connection and never answers",
    "refuse": "refuses every association (AARE rejected-permanent, no reason given)",
    "wrong_key": "holds other keys and password than the fleet's: association refused, authentication failure",
    "drift": "its clock runs 7 min 30 s ahead (for clock-skew checks)",
    "gaps": "power failures 02:00-04:00 every third day: missing profile entries, power-down bit after",
    "tamper": "tamper bit (0x10) in the profile status on some entries and in 0-0:96.10.1.255",
    "garbage": "answers every second request after the association with bytes that are no APDU",
}
DRIFT_S = 450.0


def parse_faults(items: list[str], meter_ids: list[str]) -> dict[str, frozenset[str]]:
    """'D-0003=timeout' items -> faults per meter; ValueError naming the bad item."""
    known = set(meter_ids)
    out: dict[str, set[str]] = {}
    for item in items:
        meter_id, _, name = item.partition("=")
        if name not in FAULTS:
            raise ValueError(f"--fault {item!r}: want METER=FAULT with FAULT one of {', '.join(FAULTS)}")
        if meter_id not in known:
            raise ValueError(f"--fault {item!r}: unknown meter {meter_id!r}")
        out.setdefault(meter_id, set()).add(name)
    return {k: frozenset(v) for k, v in out.items()}


def faulty_secrets(secrets: Secrets, meter_id: str) -> Secrets:
    """Keys and password of a meter that was keyed differently from the head-end's records."""
    digest = hashlib.sha256(b"wrong-key:" + meter_id.encode()).digest()
    return replace(secrets, password=b"other-pw", encryption_key=digest[:16], authentication_key=digest[16:])
