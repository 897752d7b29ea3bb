"""The shared vocabulary of every stage: frozen dataclasses, stdlib only."""

from gateway.model.batch import Batch
from gateway.model.commands import Command, CommandKind, CommandStatus, Submission
from gateway.model.events import DeadLetter, Event, EventKind, Severity
from gateway.model.meters import Assignment, Meter, MeterStatus, Protocol, Utility
from gateway.model.payg import BalanceUpdate, Relay
from gateway.model.readings import (
    CUMULATIVE_CHANNELS,
    UNITS,
    Channel,
    Kind,
    Quality,
    Reading,
    Source,
    Status,
)

__all__ = [
    "CUMULATIVE_CHANNELS",
    "UNITS",
    "Assignment",
    "BalanceUpdate",
    "Batch",
    "Channel",
    "Command",
    "CommandKind",
    "CommandStatus",
    "DeadLetter",
    "Event",
    "EventKind",
    "Kind",
    "Meter",
    "MeterStatus",
    "Protocol",
    "Quality",
    "Reading",
    "Relay",
    "Severity",
    "Source",
    "Status",
    "Submission",
    "Utility",
]
