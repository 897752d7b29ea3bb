"""A batch: what the pipeline hands the spool and the spool hands a sink."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.model.events import DeadLetter, Event
from gateway.model.payg import BalanceUpdate
from gateway.model.readings import Reading


@dataclass(slots=True)
class Batch:
    readings: list[Reading] = field(default_factory=list)
    balances: list[BalanceUpdate] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.readings) + len(self.balances) + len(self.events) + len(self.deadletters)

    def extend(self, other: Batch) -> None:
        self.readings.extend(other.readings)
        self.balances.extend(other.balances)
        self.events.extend(other.events)
        self.deadletters.extend(other.deadletters)
