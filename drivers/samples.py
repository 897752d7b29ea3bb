"""Kept for one release: the samples moved to gateway.model.samples (import them from there)."""

from gateway.model.samples import (
    Ack,
    ObjectValue,
    PollFailure,
    RawObjects,
    RawPayload,
    RawRegisters,
    RegisterBlock,
    Sample,
)

__all__ = ["Ack", "ObjectValue", "PollFailure", "RawObjects", "RawPayload", "RawRegisters", "RegisterBlock", "Sample"]
