"""What drivers emit and the normaliser reads: the samples of stage 1, as vocabulary.

Each protocol emits one of these shapes (registers, a pushed payload, or objects identified by a
code); turning them into readings is the normaliser's job. They live in the model so that the
stages that read them (normalise, the pipeline, diagnostics) depend on the vocabulary, not on a
driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from gateway.errors import DriverError
from gateway.model.events import DeadLetter, Event
from gateway.model.payg import BalanceUpdate
from gateway.model.readings import Quality, Source

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

    #: The source of the readings and dead letters registers give (Modbus is the driver that reads them).
    SOURCE: ClassVar[Source] = Source.MODBUS

    meter_id: str
    ts: datetime  # measurement time: the interval boundary the poll belongs to
    received_at: datetime
    blocks: tuple[RegisterBlock, ...]
    latency_s: float


@dataclass(frozen=True, slots=True)
class RawPayload:
    """One pushed message as received; `ack` must be called only after it is durable.

    `template` is the topic template the message matched (None: none did); the normaliser picks
    the payload format by it, so it needs no topic matching of its own.
    """

    #: The source of the balances and dead letters a payload gives (MQTT is the driver that pushes them).
    SOURCE: ClassVar[Source] = Source.MQTT

    topic: str
    payload: bytes
    received_at: datetime
    meter_id: str | None  # resolved from the topic template, None if unknown
    ack: Ack | None = None
    template: str | None = None


#: One value of a RawObjects: (code, value, unit). The code is what identifies the quantity in its
#: protocol: an OBIS code ("1-0:1.8.0"), an M-Bus VIF ("VIF:0x13"); the unit is the one the
#: telegram states, None when it states none (the object map then says it).
ObjectValue = tuple[str, Decimal | float | str, str | None]


@dataclass(frozen=True, slots=True)
class RawObjects:
    """Values identified by a code (DLMS/COSEM, M-Bus, wM-Bus, P1, SML): one telegram or readout.

    `ts` is the measurement time (the meter's clock when the telegram carries one, else
    `received_at`). `raw` keeps the telegram or APDU as received, for dead letters and /v1/diag.
    """

    meter_id: str
    ts: datetime
    received_at: datetime
    values: tuple[ObjectValue, ...]
    raw: bytes = b""
    #: Flags the device states for these values (a load profile row's status byte, DLMS backfill).
    quality: Quality = Quality.NONE
    #: Values the meter recorded earlier and keeps (an M-Bus storage number's due-day value): their
    #: readings carry no receive time, so VEE's time checks (stale, future) leave them alone, as
    #: they do an import's; `ts` is the time the meter recorded them.
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class PollFailure:
    """A poll that got nothing usable: the driver's typed error, at the poll's slot."""

    SOURCE: ClassVar[Source] = Source.MODBUS

    meter_id: str
    ts: datetime
    error: DriverError


#: Everything a driver may hand the pipeline.
#: A BalanceUpdate is a driver's when it reads the credit itself (DLMS prepayment objects).
Sample = RawRegisters | RawPayload | RawObjects | PollFailure | Event | DeadLetter | BalanceUpdate

__all__ = ["Ack", "ObjectValue", "PollFailure", "RawObjects", "RawPayload", "RawRegisters", "RegisterBlock", "Sample"]
