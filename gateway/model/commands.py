"""Commands to PAYG meters (top-up, disconnect, reconnect) and their tracked status.

A command is sent once per key: its `reference` (a payment's receipt number names one payment)
and, for clients that have no reference, the `idempotency_key` they send with it. A repeat under
a key the store already holds gets the command stored under it (`Submission.replayed`), never a
second command to the meter; a repeat whose body differs is refused (`Command.differences`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

#: The longest reference or Idempotency-Key.
MAX_KEY = 200


class CommandKind(StrEnum):
    TOPUP = "topup"
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    #: A prepayment token (STS: 20 digits) entered at the meter's Token gateway (DLMS class 115).
    TOKEN = "token"


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
    #: The client's Idempotency-Key (the reference is a key of its own).
    idempotency_key: str | None = None
    #: FAILED before anything reached the broker (the publish was refused before it was written):
    #: a repeat under its key sends it then. Never set once it may have been sent.
    unsent: bool = False

    def differences(self, request: Command) -> list[str]:
        """How `request` (a new command under one of this command's keys) differs from it: one
        'field: this, not that' per field the client chooses (the meter, kind, amount, reference)."""

        def shown(value: object) -> str:
            return "none" if value is None else str(value)

        out = []
        for name, mine, theirs in (("meter_id", self.meter_id, request.meter_id),
                                   ("kind", self.kind.value, request.kind.value),
                                   ("amount", self.amount, request.amount),
                                   ("reference", self.reference, request.reference)):
            # Decimal equality: 100.5 and 100.50 are one amount.
            if mine != theirs:
                out.append(f"{name}: {shown(theirs)} in this request, {shown(mine)} in the stored command")
        return out


@dataclass(frozen=True, slots=True)
class Submission:
    """What sending a command gave: the command, and whether it was already stored under its key
    (a repeat: nothing was sent now)."""

    command: Command
    replayed: bool = False
