"""The driver contract: what a protocol implements to plug into the gateway, and all the runtime
knows of it.

A protocol brings a `DriverSpec` (its settings section, its meter keys, its cross-checks, what its
meters mean to the stages, and how to build its drivers) and one line in `drivers/registry.py`.
The runtime builds each spec's drivers from a `BuildContext`, runs every `Driver` until cancelled,
and reads their `status()` and `meter_health()` for diagnostics and metrics. Optional capabilities
(`PollNow`, `RawRead`, `Commanding`, ...) are found with `isinstance`, never by protocol name.
Everything here is typed with the model's vocabulary, so the runtime needs no driver's own module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from drivers.polling.health import LatencyWindow, MeterHealth
from gateway.model import Command, CommandKind, Source, Submission
from gateway.model.meters import MeterBinding
from gateway.model.meters import Protocol as RegistryProtocol
from gateway.model.payg import BalanceTerms
from gateway.model.payloads import PayloadLayout
from gateway.model.profiles import DeviceProfile, ObjectMap
from gateway.model.samples import RawObjects, RawRegisters, Sample

#: How a driver hands a sample to the pipeline; awaiting it is the back-pressure.
Emit = Callable[[Sample], Awaitable[None]]
#: A key in the configuration: ("modbus", "endpoints", 2, "host") is modbus.endpoints[2].host.
KeyPath = tuple[str | int, ...]
#: One configuration problem a spec's cross-check finds: the key it is about, and what is wrong.
Problem = tuple[KeyPath, str]


# -- what a driver reports ---------------------------------------------------------------------

class Observed(Protocol):
    """What the pipeline saw of the drivers' samples (diagnostics' book), for their status:
    polls per endpoint and pushed messages, each with a rate and errors by kind."""

    def polls_per_second(self, endpoint: str) -> float: ...
    def poll_failures(self, endpoint: str) -> Mapping[str, int]: ...
    def messages_per_second(self) -> float: ...
    def message_failures(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class DriverStatus:
    """One driver's link as /v1/diag/status, the status page, the status CLI and /readyz show it."""

    label: str  # "modbus bus-1", "mqtt": how people name the link
    where: str  # "tcp 10.0.0.5:502", "mqtt://broker:1883"
    connected: bool
    rate: float  # samples per second over the last minute
    rate_unit: str  # "polls/s", "msg/s"
    errors_by_kind: Mapping[str, int]
    meters: int | None = None
    #: The readiness check this link is ("broker": /readyz fails while it is down); None: not one.
    check: str | None = None
    #: The protocol's own fields of its /v1/diag/status entry (endpoint, transport, broker, ...).
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "where": self.where, "connected": self.connected, "meters": self.meters,
                "rate": self.rate, "rate_unit": self.rate_unit, "errors_by_kind": dict(self.errors_by_kind),
                "check": self.check, **self.detail}


@dataclass(frozen=True, slots=True)
class LinkMetric:
    """The Prometheus gauge of a protocol's links: 1 while connected. `label` names the label that
    carries the driver's `target` (one series per link); None: one unlabelled gauge, present while
    the protocol runs a driver."""

    name: str  # without the meter_gateway_ prefix
    help: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class MeterFacts:
    """What one configured meter means to the stages and to diagnostics, in the model's terms;
    its driver spec says it, the runtime hands it on (no stage asks which protocol it is)."""

    protocol: RegistryProtocol  # the registry row's protocol (modbus_tcp, mqtt, p1, ...)
    address: str  # the registry row's address
    model: str  # the registry row's model: the device profile or map, "payg"
    where: str  # diagnostics: "bus-1 (10.0.0.5:502) unit 3", a topic, a port
    endpoint: str | None = None  # the link a polled meter shares with others (a bus); None: pushes
    unit: int | None = None  # its device address on that link
    interval: float | None = None  # seconds between polls: VEE gaps, the API's silent rule, charts
    profile: DeviceProfile | None = None  # register map: decoding and VEE moduli
    objects: ObjectMap | None = None  # code map: its RawObjects into readings
    balance: BalanceTerms | None = None  # the meter reports PAYG balances, read on these terms


# -- the contract ------------------------------------------------------------------------------

@runtime_checkable
class Driver(Protocol):
    """One running link to meters (a bus, a broker, a serial port)."""

    @property
    def name(self) -> str:
        """Unique in the gateway: "modbus:bus-1", "mqtt"; the name of its task and log lines."""
        ...

    @property
    def target(self) -> str:
        """The link's name as technicians use it ("bus-1"); "" for a protocol's only link."""
        ...

    async def run(self) -> None:
        """Until cancelled; owns its reconnects and back-off. A meter's failure is emitted, never raised."""
        ...

    def meter_ids(self) -> Sequence[str]: ...

    def status(self, observed: Observed) -> DriverStatus: ...

    def meter_health(self, meter_id: str) -> MeterHealth | None:
        """A polled meter's health (drivers/polling/health.py); None for meters that push."""
        ...


@runtime_checkable
class PollNow(Protocol):
    """Capability: read a meter at once, past its schedule (a technician asked); nothing is emitted."""

    async def poll_now(self, meter_id: str) -> RawRegisters | RawObjects: ...


@runtime_checkable
class RawRead(Protocol):
    """Capability: a raw read on the link (Modbus registers today; a DLMS attribute later)."""

    @property
    def target(self) -> str: ...

    async def read_raw(self, request: Mapping[str, Any]) -> Mapping[str, Any]: ...


@runtime_checkable
class MeterDetail(Protocol):
    """Capability: a meter's protocol state for diagnostics (DLMS: last association, last APDU), no secrets."""

    def meter_detail(self, meter_id: str) -> Mapping[str, Any] | None: ...


@runtime_checkable
class Poller(PollNow, Protocol):
    """A driver that polls meters on a schedule: its meters' health by meter id."""

    def health(self) -> dict[str, MeterHealth]: ...


@runtime_checkable
class Subscriber(Protocol):
    """A driver that subscribes to a broker and is told what its meters push."""

    @property
    def settings(self) -> Any:
        """What it connects with (broker, client id, reconnect delays)."""
        ...

    @property
    def subscriptions(self) -> tuple[str, ...]: ...

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def recent(self, meter_id: str) -> list[dict[str, Any]]:
        """The last few messages of a meter, newest last: {"topic", "payload", "received_at"}."""
        ...


class CommandSender(Protocol):
    """Sends PAYG commands (top-up, disconnect, reconnect) and follows their replies."""

    def serves(self, meter_id: str) -> bool: ...

    async def submit(self, meter_id: str, kind: CommandKind | str, *, amount: Decimal | None = None,
                     reference: str | None = None, key: str | None = None,
                     token: str | None = None) -> Submission: ...

    def get(self, correlation_id: str) -> Command | None: ...

    def restore(self, commands: Iterable[Command]) -> int: ...


@runtime_checkable
class Commanding(Protocol):
    """Capability: the driver sends commands to its meters (None while they are off)."""

    @property
    def commands(self) -> CommandSender | None: ...


@dataclass(frozen=True, slots=True)
class CommandPorts:
    """The store's command records and the PAYG checker's hook, handed to drivers that send
    commands (callbacks, so no driver imports the runtime or a store)."""

    save: Callable[[Command], Awaitable[None]]
    claim: Callable[[Command], Awaitable[list[Command]]]
    retry_unsent: Callable[[str, datetime], Awaitable[Command | None]]
    load: Callable[[str], Awaitable[Command | None]]
    #: A meter answered a command (sent at, answered at): its next balance update is off-cycle.
    replied: Callable[[str, datetime | None, datetime], None]


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What the runtime hands a spec to build its drivers: never the whole configuration."""

    settings: Any  # the spec's own [<protocol>] section, validated
    meters: Sequence[MeterBinding]  # the meters of this protocol, inactive ones too
    profiles: Mapping[str, DeviceProfile]
    emit: Emit
    gateway_id: str
    commands: CommandPorts | None = None
    clock: Callable[[], datetime] | None = None  # None: the driver's default (UTC now)
    monotonic: Callable[[], float] | None = None
    #: The time of a meter's newest stored reading (None: none), for a driver that fills the gap
    #: since then from the meter's memory (DLMS backfill); None: the driver is not told.
    last_reading: Callable[[str], Awaitable[datetime | None]] | None = None


def _no_problems(settings: Any, meters: Sequence[MeterBinding], profiles: Mapping[str, DeviceProfile]
                 ) -> Iterable[Problem]:
    return ()


def _no_paths(settings: Any) -> Sequence[Path]:
    return ()


def _no_payloads(settings: Any) -> Sequence[PayloadLayout]:
    return ()


def _no_terms(settings: Any) -> BalanceTerms | None:
    return None


def _no_rows(settings: Any, meters: Sequence[MeterBinding]) -> Sequence[tuple[str, str]]:
    return ()


def _no_details(drivers: Sequence[Driver]) -> Any:
    return None



@dataclass(frozen=True, slots=True)
class ScanRequest:
    """Where and how far `meter-gateway scan` looks for meters: one endpoint, a range of unit ids,
    each request's timeout and a bound on the whole scan's time."""

    transport: str  # tcp | rtu_tcp | serial
    host: str = ""
    port: int = 502
    serial_port: str | None = None
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    timeout: float = 1.0
    units: tuple[int, ...] = tuple(range(1, 248))
    budget: float = 300.0  # seconds for the whole scan

    @property
    def where(self) -> str:
        return self.serial_port or "" if self.transport == "serial" else f"{self.host}:{self.port} ({self.transport})"


@dataclass(frozen=True, slots=True)
class ScanHit:
    """A unit that answered: the profile that fits it best (None: none fits), why, and the profiles
    that fit it as well (same registers, e.g. SDM630 and SDM72D-M v2)."""

    unit: int
    profile: str | None
    how: str
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What a scan found. `stopped` says why it ended before probing every unit (None: it did not)."""

    where: str
    wanted: int  # unit ids asked for
    probed: int  # unit ids probed
    hits: tuple[ScanHit, ...]
    stopped: str | None = None


#: A protocol's bus scan: the request, the profiles to try, and progress(probed, wanted).
Scanner = Callable[[ScanRequest, Mapping[str, DeviceProfile], Callable[[int, int], None]], Awaitable[ScanReport]]

@dataclass(frozen=True, eq=False)
class DriverSpec:
    """A protocol, as the configuration, the runtime and diagnostics see it. `eq=False`: a spec is
    itself (a registry is compared, and cached, by the specs it holds)."""

    protocol: str  # meters[].protocol and the name of its [<protocol>] section
    source: Source  # the source of the readings its meters give
    #: Its [<protocol>] section: a type pydantic validates (a frozen dataclass or a model), with defaults.
    settings: type
    #: A meter's keys of this protocol: a frozen dataclass whose fields all have defaults (pydantic
    #: reads their annotated-types bounds; metadata["description"] documents a key).
    meter_fields: type
    build: Callable[[BuildContext], Sequence[Driver]]
    #: What a meter means to the stages and to diagnostics (profiles: the loaded device profiles).
    facts: Callable[[MeterBinding, Any, Mapping[str, DeviceProfile]], MeterFacts]
    #: Checks across keys, each problem with its key path (every meter is passed: a key of this
    #: protocol on another protocol's meter is this spec's to report).
    check: Callable[[Any, Sequence[MeterBinding], Mapping[str, DeviceProfile]], Iterable[Problem]] = _no_problems
    #: Secrets environment variables override: variable -> key of the section.
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: Folders of more device profiles the section names.
    profile_dirs: Callable[[Any], Sequence[Path]] = _no_paths
    #: How the payloads its meters push are written, per topic template.
    payloads: Callable[[Any], Sequence[PayloadLayout]] = _no_payloads
    #: PAYG terms for a balance of a meter nobody configured (the PAYG checker's default).
    balance_default: Callable[[Any], BalanceTerms | None] = _no_terms
    #: Rows of `meter-gateway config check`'s summary table.
    config_rows: Callable[[Any, Sequence[MeterBinding]], Sequence[tuple[str, str]]] = _no_rows
    #: At most one link (a broker): its /v1/diag/status entry is an object or null, not a list.
    one_link: bool = False
    link_metric: LinkMetric | None = None
    #: Per-meter detail of its drivers for /v1/diag/status (large for a big fleet).
    details: Callable[[Sequence[Driver]], Any] = _no_details
    #: Find meters on one link and tell their profiles (`meter-gateway scan`); None: cannot.
    scan: Scanner | None = None


__all__ = [
    "BuildContext",
    "CommandPorts",
    "CommandSender",
    "Commanding",
    "Driver",
    "DriverSpec",
    "DriverStatus",
    "Emit",
    "KeyPath",
    "LatencyWindow",
    "LinkMetric",
    "MeterBinding",
    "MeterDetail",
    "MeterFacts",
    "MeterHealth",
    "Observed",
    "PollNow",
    "Poller",
    "Problem",
    "RawRead",
    "ScanHit",
    "ScanReport",
    "ScanRequest",
    "Scanner",
    "Subscriber",
]
