"""The DLMS driver's typed errors, under the gateway's DriverError (kind: what diagnostics group by)."""

from __future__ import annotations

from gateway.errors import DriverError

#: Bytes of a frame or APDU an error keeps (dead letters carry them in hex).
KEEP = 512


class FrameError(DriverError):
    """Bytes that are not what the protocol allows: a garbage frame, a bad HDLC checksum, a
    truncated APDU, data of the wrong type. `raw` is what was received."""

    kind = "frame"

    def __init__(self, meter_id: str | None, where: str, message: str, raw: bytes = b"") -> None:
        self.raw = bytes(raw[:KEEP])
        super().__init__(meter_id, where, message)


class AssociationRefused(DriverError):
    """The meter refused the association (or its HLS step): `reason` is the meter's diagnostic
    (`authentication failure` for a wrong password or key)."""

    kind = "association"

    def __init__(self, meter_id: str | None, where: str, reason: str) -> None:
        self.reason = reason
        #: What the meter's AARE said, when the reason is read from it ("rejected permanent, ...").
        self.said = reason
        super().__init__(meter_id, where, f"association refused: {reason}")


class AccessError(DriverError):
    """The meter answered a GET with a data-access-result other than success (object undefined,
    read denied, ...)."""

    kind = "access"

    def __init__(self, meter_id: str | None, where: str, what: str, result: str) -> None:
        self.result = result
        super().__init__(meter_id, where, f"{what}: {result}")


__all__ = ["KEEP", "AccessError", "AssociationRefused", "FrameError"]
