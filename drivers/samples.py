"""The only things drivers emit. Decoding them into readings is the normaliser's job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import DriverError

#: Called by the pipeline once the sample's data is durable (committed to the spool).
#: For MQTT it sends the PUBACK; it must be safe to call from the event loop thread.
Ack = Callable[[], None]


@dataclass(frozen=True, slots=True)
class RegisterBlock:
    function: int  # 3 holding, 4 input
    address: int
    words: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RawRegisters:
    """The register blocks read from one meter in one poll."""

    meter_id: str
    ts: datetime  # measurement time: the interval boundary the poll belongs to
    received_at: datetime
    blocks: tuple[RegisterBlock, ...]
    latency_s: float


@dataclass(frozen=True, slots=True)
class RawPayload:
    """One MQTT message as received; `ack` must be called only after it is durable."""

    topic: str
    payload: bytes
    received_at: datetime
    meter_id: str | None  # resolved from the topic template, None if unknown
    ack: Ack | None = None


@dataclass(frozen=True, slots=True)
class PollFailure:
    meter_id: str
    ts: datetime
    error: DriverError
