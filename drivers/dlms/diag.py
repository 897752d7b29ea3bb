"""What technicians see of a DLMS meter through /v1/diag: its association state, and one attribute read.

- `detail`: the meter's last association (when, and the security it used - the mechanism, never a
  key or password), its last error, latency percentiles, the clock offset and the last APDU the
  meter sent, in hex as it came off the wire: a ciphered meter's APDU stays ciphered here (the
  plaintext of a ciphered association is never shown, as it is never logged).
- `read_attribute`: one attribute of one COSEM object (`{"obis", "class_id", "attribute"}`), read in
  its own association behind the endpoint's bus lock (DlmsPoller.read_raw); the answer is the
  decoded value (a register's value 2 also scaled by its scaler, with its unit) and the attribute's
  A-XDR bytes in hex. Attributes that hold secrets are refused before anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from dlms_cosem import enumerations

from drivers.dlms import axdr
from drivers.dlms.cosem import obis_bytes, obis_code, scaled
from drivers.dlms.errors import FrameError
from drivers.dlms.reads import EXTENDED_REGISTER, REGISTER, Reader
from drivers.dlms.session import Session
from drivers.polling.health import MeterHealth
from gateway.errors import InvalidRequest, NotFound

#: The last APDU shown is cut to this many bytes (a profile answer may be 64 KiB).
APDU_SHOWN = 256
ASSOCIATION_LN = 15
#: (class, attribute) pairs that carry secrets: Association LN's `secret` (the LLS password).
#: Security setup (class 64) has no readable key attribute; keys are written by methods only.
SECRET_ATTRIBUTES = frozenset({(ASSOCIATION_LN, 7)})
_CLASSES = frozenset(int(c) for c in enumerations.CosemInterface)


@dataclass(frozen=True, slots=True)
class AttributeRequest:
    """A technician's read of one attribute, checked before the meter is asked."""

    meter_id: str
    obis: bytes
    class_id: int
    attribute: int

    @classmethod
    def parse(cls, request: Mapping[str, Any], meters: Mapping[str, object]) -> AttributeRequest:
        """NotFound for a meter of another endpoint; InvalidRequest (what and where) for the rest."""
        meter = str(request.get("meter_id", ""))
        if meter not in meters:
            raise NotFound("dlms meter", meter)
        try:
            code = obis_bytes(str(request.get("obis", "")))
        except ValueError as exc:
            raise InvalidRequest(f"obis: {exc}") from None
        class_id, attribute = request.get("class_id"), request.get("attribute", 2)
        if not isinstance(class_id, int) or isinstance(class_id, bool) or class_id not in _CLASSES:
            raise InvalidRequest(f"class_id={class_id!r}: not a COSEM interface class this driver knows "
                                 f"(e.g. 1 data, 3 register, 4 extended register, 8 clock, 7 profile generic)")
        if not isinstance(attribute, int) or isinstance(attribute, bool) or not 1 <= attribute <= 127:
            raise InvalidRequest(f"attribute={attribute!r}: attributes are numbered 1..127")
        if (class_id, attribute) in SECRET_ATTRIBUTES:
            raise InvalidRequest(f"class {class_id} attribute {attribute} holds a secret: it is not read here")
        return cls(meter, code, class_id, attribute)


async def read_attribute(reader: Reader, session: Session, ask: AttributeRequest) -> dict[str, Any]:
    """Read `ask` on an associated session: AccessError (the meter refused), FrameError (not A-XDR)."""
    raw = await session.get(ask.class_id, ask.obis, ask.attribute)
    code = obis_code(ask.obis)
    try:
        value = axdr.decode(raw)
    except axdr.DataError as exc:
        raise FrameError(session.meter_id, session.where, f"{code} attribute {ask.attribute}: {exc}", raw) from None
    out: dict[str, Any] = {"meter_id": ask.meter_id, "obis": code, "class_id": ask.class_id,
                           "attribute": ask.attribute, "value": plain(value), "raw": raw.hex(),
                           "scaled": None, "unit": None}
    if ask.class_id in (REGISTER, EXTENDED_REGISTER) and ask.attribute == 2:
        su = await reader.scaler_unit(session, ask.class_id, code)
        try:
            out["scaled"], out["unit"] = str(scaled(value, su)), su.unit
        except TypeError:
            pass  # a register whose value is not a number: the plain value says what it is
    return out


def plain(value: axdr.Value) -> Any:
    """A decoded value as JSON shows it: numbers as exact strings, octet strings and date-times in hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return [plain(v) for v in value]


def detail(health: MeterHealth | None, *, authentication: str, ciphered: bool, last_association: datetime | None,
           associations: int, last_apdu: bytes, clock_offset_s: float | None) -> dict[str, Any]:
    """The DLMS state of one meter for /v1/diag/meters/{id} (no secrets: none are passed in)."""
    h = health
    return {
        "protocol": "dlms", "authentication": authentication, "ciphered": ciphered,
        "last_association": last_association.isoformat() if last_association is not None else None,
        "associations": associations,
        "last_error": h.last_error if h is not None else None,
        "last_error_kind": h.last_error_kind if h is not None else None,
        "latency_p50_s": h.latency_p50_s if h is not None else None,
        "latency_p90_s": h.latency_p90_s if h is not None else None,
        "latency_p99_s": h.latency_p99_s if h is not None else None,
        "clock_offset_s": clock_offset_s,
        "last_apdu": last_apdu[:APDU_SHOWN].hex(), "last_apdu_bytes": len(last_apdu),
    }


__all__ = ["SECRET_ATTRIBUTES", "AttributeRequest", "detail", "plain", "read_attribute"]
