"""The configuration file's schema. Field descriptions double as the reference doc."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.model.meters import MeterStatus, Utility


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    id: str = Field(default="gateway-1", min_length=1, description="Stamped on what this gateway writes")
    data_dir: Path = Field(default=Path("var"), description="Spool and embedded store live here")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    queue_size: int = Field(default=10_000, ge=10, description="Bound of the queue between drivers and pipeline")
    shutdown_deadline: float = Field(default=10.0, gt=0, description="Seconds to drain on SIGTERM")


class ApiSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class StorageSection(_Section):
    backend: Literal["sqlite", "timescale"] = "sqlite"
    sqlite_path: Path = Field(default=Path("store.db"), description="Relative to gateway.data_dir")
    dsn: str | None = Field(default=None, description="PostgreSQL DSN; env METER_GATEWAY_STORAGE_DSN overrides")
    chunk_interval: str = "7 days"


class SpoolSection(_Section):
    path: Path = Field(default=Path("spool.db"), description="Relative to gateway.data_dir")
    max_bytes: int = Field(default=1_000_000_000, ge=1_000_000)
    batch_size: int = Field(default=2000, ge=1, le=100_000)


class EndpointSection(_Section):
    name: str = Field(min_length=1)
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    framer: Literal["socket", "rtu"] = "socket"
    timeout: float = Field(default=1.0, gt=0, le=60)
    pause: float = Field(default=0.0, ge=0, le=5)


class ModbusSection(_Section):
    default_interval: float = Field(default=60.0, gt=0)
    profile_dirs: list[Path] = Field(default_factory=list)
    endpoints: list[EndpointSection] = Field(default_factory=list)


class MqttSection(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(default=None, description="Fixed id for the persistent session; default meter-gateway-<gateway.id>")
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: str | None = Field(default=None, description="env METER_GATEWAY_MQTT_PASSWORD overrides")
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    topics: list[str] = Field(default_factory=lambda: ["payg/{meter_id}/balance"])
    share_group: str | None = None
    currency: str = "XXX"
    low_credit_threshold: Decimal = Decimal("5")

    @field_validator("topics")
    @classmethod
    def _has_placeholder(cls, topics: list[str]) -> list[str]:
        for t in topics:
            if "{meter_id}" not in t:
                msg = f"topic template {t!r} has no {{meter_id}} placeholder"
                raise ValueError(msg)
        return topics


class MeterSection(_Section):
    meter_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    utility: Utility = Utility.ELECTRICITY
    protocol: Literal["modbus", "mqtt"] = "modbus"
    endpoint: str | None = None
    unit: int | None = Field(default=None, ge=1, le=247)
    profile: str = "generic"
    interval: float | None = Field(default=None, gt=0)
    payg: bool = False
    status: MeterStatus = MeterStatus.ACTIVE
    device_number: str | None = None
    consumer_number: str | None = None
    location: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class GatewayConfig(_Section):
    """The whole configuration file, validated."""

    gateway: GatewaySection = GatewaySection()
    api: ApiSection = ApiSection()
    storage: StorageSection = StorageSection()
    spool: SpoolSection = SpoolSection()
    modbus: ModbusSection = ModbusSection()
    mqtt: MqttSection = MqttSection()
    meters: list[MeterSection] = Field(default_factory=list)

    def data_path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.gateway.data_dir / p
