from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from gateway.model import Meter


class MeterOut(BaseModel):
    meter_id: str = Field(examples=["M-5678"])
    device_number: str | None = None
    utility: str = Field(examples=["electricity"])
    model: str = Field(examples=["sdm630"])
    protocol: str = Field(examples=["modbus_tcp"])
    address: str = Field(examples=["gw1/3"])
    payg: bool
    status: str = Field(examples=["active"])
    installed_at: datetime | None = None
    consumer_number: str | None = None
    location: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, m: Meter) -> MeterOut:
        return cls(meter_id=m.meter_id, device_number=m.device_number, utility=m.utility.value, model=m.model,
                   protocol=m.protocol.value, address=m.address, payg=m.payg, status=m.status.value,
                   installed_at=m.installed_at, consumer_number=m.consumer_number, location=m.location,
                   tags=dict(m.tags))
