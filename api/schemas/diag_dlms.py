"""Bodies of the technicians' DLMS attribute read (POST /v1/diag/meters/{id}/attribute)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: A-B:C.D.E with an optional .F or *F (each group a number; 0..255 is checked by the driver).
OBIS_PATTERN = r"^\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(?:[.*]\d{1,3})?$"


class AttributeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    obis: str = Field(min_length=5, max_length=32, examples=["1-0:1.8.0.255"], pattern=OBIS_PATTERN,
                      description="The object's logical name, A-B:C.D.E or A-B:C.D.E.F")
    class_id: int = Field(ge=1, le=255, examples=[3], description="COSEM interface class (1 data, 3 register, ...)")
    attribute: int = Field(default=2, ge=1, le=127, examples=[2], description="Attribute number (2: the value)")


class AttributeOut(BaseModel):
    meter_id: str
    endpoint: str
    obis: str = Field(examples=["1-0:1.8.0"])
    class_id: int
    attribute: int
    value: Any = Field(description="Decoded A-XDR: numbers (exact strings for decimals), text, octet strings and "
                       "date-times in hex, arrays and structures as lists")
    scaled: str | None = Field(default=None, examples=["12345.678"],
                               description="A register's value (attribute 2) times 10^scaler, exactly")
    unit: str | None = Field(default=None, examples=["kWh"])
    raw: str = Field(description="The attribute's A-XDR bytes in hex, as the meter sent them (deciphered)")
