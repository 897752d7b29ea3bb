"""A wmbusmeters-shaped MQTT publisher: the JSON wmbusmeters prints for a wireless M-Bus water or
heat meter (its field names: total_m3, target_m3, flow_temperature_c, current_status, timestamp,
rssi_dbm, ... as wmbusmeters' drivers multical21, sharky774 and waterstarm write them), published on
`wmbusmeters/<name>` as wmbusmeters' `shell=mosquitto_pub -t wmbusmeters/$METER_NAME -m "$METER_JSON"`
does. Faults: a status word (LEAK, BURST, DRY, TAMPER, POWER_LOW), a counter reset at a meter
exchange, a missing telegram (skip), and garbage instead of JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from simulators.mqtt.publisher import PaygPublisher, to_json


@dataclass(slots=True)
class WmbusMeter:
    name: str  # the meter's name in wmbusmeters: the gateway's meter_id
    ident: str  # its 8-digit id
    kind: str = "water"  # water | heat
    total: Decimal = Decimal("123.529")  # m3 (water) or kWh (heat)
    status: str = "OK"
    extra: dict[str, Any] = field(default_factory=dict)

    def advance(self, step: Decimal) -> None:
        self.total += step

    def reset(self) -> None:
        """A meter exchange: the new meter's counter starts again."""
        self.total = Decimal("0.000")

    def doc(self, at: datetime) -> dict[str, Any]:
        ts = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.kind == "heat":
            body: dict[str, Any] = {
                "_": "telegram", "media": "heat", "meter": "sharky774", "name": self.name, "id": self.ident,
                "total_energy_consumption_kwh": self.total, "total_volume_m3": Decimal("645.319"),
                "volume_flow_m3h": Decimal("0.004"), "power_kw": Decimal("0.111"),
                "flow_temperature_c": Decimal("51.7"), "return_temperature_c": Decimal("27.6"),
                "energy_at_set_date_kwh": Decimal(6347), "set_date": "2026-05-31",
            }
        else:
            body = {
                "_": "telegram", "media": "cold water", "meter": "multical21", "name": self.name, "id": self.ident,
                "status": self.status, "total_m3": self.total, "target_m3": Decimal("120.001"),
                "target_date": "2026-11-30", "flow_temperature_c": Decimal(9), "external_temperature_c": Decimal(19),
                "current_status": "" if self.status == "OK" else self.status, "time_dry": "", "time_reversed": "",
                "time_leaking": "", "time_bursting": "",
            }
        return {**body, **self.extra, "timestamp": ts, "device": "im871a[00102759]", "rssi_dbm": -72}


async def publish(pub: PaygPublisher, meter: WmbusMeter, at: datetime, *, prefix: str = "wmbusmeters",
                  raw: bytes | None = None) -> None:
    """One telegram's JSON (or `raw` bytes: garbage) on `<prefix>/<name>`, acknowledged by the broker."""
    payload = raw if raw is not None else to_json(meter.doc(at)).encode()
    await pub.publish(f"{prefix}/{meter.name}", payload)


__all__ = ["WmbusMeter", "publish"]
