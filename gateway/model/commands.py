"""Commands to PAYG meters (top-up, disconnect, reconnect) and their tracked status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class CommandKind(StrEnum):
    TOPUP = "topup"
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"


class CommandStatus(StrEnum):
    PENDING = "pending"  # published, no reply yet
    ACKNOWLEDGED = "acknowledged"  # the meter replied that it carried it out
    FAILED = "failed"  # the meter replied that it could not
    TIMED_OUT = "timed_out"  # no reply within the command's deadline


@dataclass(frozen=True, slots=True)
class Command:
    correlation_id: str
    meter_id: str
    kind: CommandKind
    created_at: datetime
    status: CommandStatus = CommandStatus.PENDING
    amount: Decimal | None = None  # top-up amount, in the meter's currency
    reference: str | None = None  # the account system's payment / order reference
    updated_at: datetime | None = None
    detail: str | None = None
