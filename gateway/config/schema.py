"""The configuration file's schema. Field descriptions double as the reference doc.

The sections here are the gateway's own. Each driver brings its [<protocol>] section and its meter
keys through its spec (`SectionSpec`); `gateway.config.sections.config_model` builds the config class
of a registry of them, so this package names no protocol and imports no driver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from gateway.config.plausibility import PlausibilitySection, aware
from gateway.config.vee import VeeSection
from gateway.model.identifiers import RULE, identifier_problem, tags_problems
from gateway.model.meters import MeterBinding, MeterStatus, Utility
from gateway.model.profiles import DeviceProfile

#: A key in the file: ("meters", 3, "profile") is meters[3].profile.
KeyPath = tuple[str | int, ...]


class SectionSpec(Protocol):
    """What the configuration needs of a driver's spec (drivers.base.DriverSpec is one)."""

    @property
    def protocol(self) -> str: ...
    @property
    def settings(self) -> type: ...
    @property
    def meter_fields(self) -> type: ...
    @property
    def secrets(self) -> Mapping[str, str]: ...
    @property
    def profile_dirs(self) -> Callable[[Any], Sequence[Path]]: ...
    @property
    def check(self) -> Callable[[Any, Sequence[MeterBinding], Mapping[str, DeviceProfile]],
                                Iterable[tuple[KeyPath, str]]]: ...


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    id: str = Field(default="gateway-1", min_length=1, description="Stamped on what this gateway writes")
    data_dir: Path = Field(default=Path("var"), description="Spool and embedded store live here")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    queue_size: int = Field(default=10_000, ge=10, description="Bound of the queue between drivers and pipeline")
    shutdown_deadline: float = Field(default=10.0, gt=0, description="Seconds to drain on SIGTERM")


_HOST_PATTERN = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")


class ApiSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=100_000_000, description="Largest request body "
                                "(bytes) of a JSON route; a longer one is answered 413 before it is read. The CSV "
                                "import has its own limit (10 MB)")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host names the API answers to (the Host "
                                     "header, port aside), e.g. ['gateway.example', '*.plant.example', "
                                     "'127.0.0.1']; others get 400. Empty (the default): any host")
    max_in_flight: int = Field(default=64, ge=1, le=100_000, description="Requests the API works on at once "
                               "(/healthz and /readyz aside); more are answered 503 with Retry-After at once, "
                               "before their key or body is looked at")
    retry_after: int = Field(default=1, ge=1, le=3600, description="Seconds a client refused by max_in_flight "
                             "is told to wait (the Retry-After header)")
    cim_tables: Path | None = Field(default=None, description="A folder whose reading_types.toml, "
                                    "reading_qualities.toml and event_types.toml replace rows of the shipped IEC "
                                    "61968-9 code tables (api/cim/tables/) row by row")
    nice: int = Field(default=10, ge=0, le=19, description="Scheduling niceness of the API process under "
                      "`meter-gateway run` (0: the core's own): when the machine is busy the core's pollers "
                      "get the CPU first, the API what is left")

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        wrong = [h for h in hosts if not _HOST_PATTERN.match(h)]
        if wrong:
            msg = (f"{', '.join(repr(h) for h in wrong)}: a host name or IPv4 address without scheme or port, "
                   "'*.example.com' for its subdomains, or '*' for any")
            raise ValueError(msg)
        return hosts


class DiagSection(_Section):
    """Technicians' diagnostics (the `diag` API and the status page)."""

    raw_reads_per_second: float = Field(default=2.0, gt=0, le=50, description="Poll-now and raw register reads "
                                        "a technician may start per second on one Modbus endpoint (a bus)")
    raw_read_burst: int = Field(default=4, ge=1, le=50, description="Reads allowed at once before that rate applies")
    silent_after: float = Field(default=3600.0, gt=0, description="Seconds without a message after which a PAYG "
                                "(MQTT) meter shows as silent")
    recent_readings: int = Field(default=50, ge=1, le=1000, description="Readings per meter kept in memory for "
                                 "diagnostics")


class StorageSection(_Section):
    backend: Literal["sqlite", "timescale"] = "sqlite"
    sqlite_path: Path = Field(default=Path("store.db"), description="Relative to gateway.data_dir")
    dsn: str | None = Field(default=None, description="PostgreSQL DSN; env METER_GATEWAY_STORAGE_DSN overrides")
    chunk_interval: str = "7 days"
    retention: str | None = Field(default=None, description="Keep data this long, e.g. '400 days' (units: minutes, "
                                  "hours, days, weeks); unset keeps it for ever")
    retention_check: float = Field(default=3600.0, gt=0, description="Seconds between the gateway's maintenance runs "
                                   "(retention, reordering closed readings chunks by meter)")
    reorder_chunks: bool = Field(default=False, description="TimescaleDB (Apache license): rewrite each closed "
                                 "readings chunk in meter order once (CLUSTER), so that one meter's month is a few "
                                 "pages, not thousands. CLUSTER locks the chunk while it runs (about 1 s per 200,000 "
                                 "rows on 2 cores), and the store's range reads and 'latest' lock every chunk, so "
                                 "they wait meanwhile: turn on where reads can stand that pause once per chunk, or run "
                                 "`meter-gateway db reorder` in a quiet hour. "
                                 "The community license's own reorder policy needs no setting")
    billing_estimate_window: str = Field(default="15 minutes", description="Bills, move reads and consumption "
                                         "buckets close on the last real read at or before a boundary when it is "
                                         "this close to it, rather than on a newer estimate (e.g. '15 minutes', "
                                         "'1 hour')")

    @field_validator("retention", "billing_estimate_window")
    @classmethod
    def _retention_period(cls, value: str | None) -> str | None:
        from gateway.config.periods import parse_period

        if value is not None:
            parse_period(value)  # ValueError names the accepted form
        return value


class SpoolSection(_Section):
    path: Path = Field(default=Path("spool.db"), description="Relative to gateway.data_dir")
    max_bytes: int = Field(default=1_000_000_000, ge=65_536)
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    linger: float = Field(default=0.05, ge=0, le=10, description="Seconds the forwarder waits to fill a batch")
    check_interval: float = Field(default=5.0, gt=0, le=3600, description="Seconds between checks that the spool "
                                  "file is still the one open (removed or replaced: a fresh spool takes it over)")


class MeterSection(_Section):
    """The keys every meter has; the keys of its protocol come from its driver's spec."""

    #: The protocols a meter may name: the registry's (config_model sets them).
    protocols: ClassVar[tuple[str, ...]] = ()

    meter_id: str = Field(description=f"The meter number; an identifier is {RULE} (gateway/model/identifiers.py)")
    utility: Utility = Utility.ELECTRICITY
    protocol: str = Field(default="", description="The driver that serves the meter, one of the registered "
                          "protocols; default the first registered (modbus)")
    payg: bool = False
    status: MeterStatus = MeterStatus.ACTIVE
    device_number: str | None = Field(default=None, description="An identifier, as meter_id")
    consumer_number: str | None = Field(default=None, description="An identifier, as meter_id")
    location: str | None = None
    installed_at: datetime | None = Field(default=None, description="When the meter was installed (a time "
                                          "without a zone is UTC): nothing it measured before is data "
                                          "([plausibility]). Not written to the registry, whose installed_at "
                                          "the API sets; the later of the two is the meter's floor")
    tags: dict[str, str] = Field(default_factory=dict, description="At most 50; keys are identifiers, values "
                                 "at most 256 printable characters")

    if TYPE_CHECKING:
        # A protocol's own keys (the fields config_model adds): meters[i].endpoint, ...
        def __getattr__(self, name: str) -> Any: ...

    @field_validator("protocol")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in cls.protocols:
            raise PydanticCustomError("protocol", "unknown protocol; the registered drivers are {registered}",
                                      {"registered": ", ".join(cls.protocols) or "none"})
        return value

    @field_validator("meter_id", "device_number", "consumer_number")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        problem = None if value is None else identifier_problem(value)
        if problem is not None:
            # A custom error, not ValueError: pydantic would put "Value error, " before the message.
            raise PydanticCustomError("identifier", "{problem}; an identifier is {rule}", {"problem": problem, "rule": RULE})
        return value

    @field_validator("installed_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return aware(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        problems = tags_problems(tags)
        if problems:
            raise PydanticCustomError("tags", "{problems}", {"problems": "; ".join(problems)})
        return tags


class SpecialReadsSection(_Section):
    timeout: float = Field(default=30.0, gt=0, le=3600, description="Seconds a polled meter has to answer a "
                           "special read (POST /v1/meters/{id}/reads) before it is timed_out")
    timeouts: dict[str, Annotated[float, Field(gt=0, le=3600)]] = Field(
        default_factory=dict, description="Per driver protocol, a timeout other than `timeout`, e.g. "
        "{ dlms = 60, mbus = 120 } (a slow bus, an association to set up)")
    max_age: float = Field(default=900.0, gt=0, le=86_400 * 7, description="A meter that pushes its data (PAYG "
                           "over MQTT) cannot be asked: its latest message no older than this many seconds "
                           "answers a special read, and the result says so")


class GatewayConfig(_Section):
    """The whole configuration file, validated. A registry's config class (`config_model`) adds one
    section per driver, named by its protocol (`config.modbus`, `config.mqtt`), and its meter keys."""

    #: The driver specs this class validates with, by protocol (empty here: no driver sections).
    specs: ClassVar[Mapping[str, SectionSpec]] = {}

    gateway: GatewaySection = GatewaySection()
    api: ApiSection = ApiSection()
    storage: StorageSection = StorageSection()
    spool: SpoolSection = SpoolSection()
    vee: VeeSection = VeeSection()
    plausibility: PlausibilitySection = PlausibilitySection()
    diag: DiagSection = DiagSection()
    special_reads: SpecialReadsSection = SpecialReadsSection()
    meters: list[MeterSection] = Field(default_factory=list)

    if TYPE_CHECKING:
        # A driver's section, by its protocol (the fields config_model adds).
        def __getattr__(self, name: str) -> Any: ...

    def data_path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.gateway.data_dir / p

    def section(self, protocol: str) -> Any:
        """The validated [<protocol>] section of a registered driver."""
        return getattr(self, protocol)

    def inactive_meters(self) -> frozenset[str]:
        """Meters whose registry status is `inactive` (their consumption is usage while disconnected)."""
        return frozenset(m.meter_id for m in self.meters if m.status is MeterStatus.INACTIVE)
