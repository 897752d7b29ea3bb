"""The object list of a simulated meter (OBIS codes as published in IEC 62056-6-1 / the Blue Book, IDIS-style
logical device 1): what each one answers is in objects.py and profile.py."""

from __future__ import annotations

from collections.abc import Callable

from simulators.dlms import axdr
from simulators.dlms.meter import MeterState
from simulators.dlms.objects import (
    UNIT_A,
    UNIT_HZ,
    UNIT_V,
    UNIT_W,
    UNIT_WH,
    Account,
    Base,
    Clock,
    CosemObject,
    Credit,
    Data,
    DisconnectControl,
    Register,
    TokenGateway,
    amr_status,
    obis,
)
from simulators.dlms.profile import LoadProfile

HISTORY_DAYS = 30
Key = tuple[int, bytes]

ASSOCIATION_LN = obis("0-0:40.0.0.255")
FRAME_COUNTER = "0-0:43.1.0.255"
PUSH_SETUP = "0-0:25.9.0.255"
#: What a push (DataNotification) carries, in order: (class, OBIS, attribute).
PUSH_OBJECTS = ((40, PUSH_SETUP, 1), (1, "0-0:42.0.0.255", 2), (8, "0-0:1.0.0.255", 2),
                (3, "1-0:1.8.0.255", 2), (3, "1-0:2.8.0.255", 2))


def _wiggle(meter: MeterState, salt: int, span: int) -> int:
    """Small deterministic variation per meter and minute (no RNG state to keep per meter)."""
    minute = int(meter.now().timestamp() // 60)
    return (meter.spec.number * 7919 + minute * 104_729 + salt * 31) % (2 * span + 1) - span


class AssociationLN(Base):
    """Class 15, 0-0:40.0.0.255, version 1: its object_list. reply_to_HLS (method 1) is the session's."""

    class_id = 15
    version = 1

    def __init__(self, meter: MeterState, objects: dict[Key, CosemObject]) -> None:
        super().__init__("0-0:40.0.0.255", meter)
        self.objects = objects

    def attribute(self, attr: int) -> bytes:
        if attr == 2:
            return axdr.array([axdr.structure(axdr.long_unsigned(o.class_id), axdr.unsigned(o.version),
                                              axdr.octet_string(o.ln), axdr.structure(axdr.array([]), axdr.array([])))
                               for o in self.objects.values()])
        if attr == 3:
            return axdr.structure(axdr.integer(1), axdr.long_unsigned(1))
        return super().attribute(attr)


class PushSetup(Base):
    """Class 40, 0-0:25.9.0.255: what the simulator pushes and where (attributes 2 and 3)."""

    class_id = 40

    def __init__(self, meter: MeterState, destination: str) -> None:
        super().__init__(PUSH_SETUP, meter)
        self.destination = destination

    def attribute(self, attr: int) -> bytes:
        if attr == 2:
            return axdr.array([axdr.structure(axdr.long_unsigned(c), axdr.octet_string(obis(ln)), axdr.integer(a),
                                              axdr.long_unsigned(0)) for c, ln, a in PUSH_OBJECTS])
        if attr == 3:
            return axdr.structure(axdr.enum(0), axdr.octet_string(self.destination.encode()), axdr.enum(0))
        return super().attribute(attr)


def build_objects(meter: MeterState, push_destination: str = "", history_days: int = HISTORY_DAYS
                  ) -> dict[Key, CosemObject]:
    m, c = meter, meter.consumption

    def reg(ln: str, value: Callable[[], bytes], scaler: int, unit: int) -> Register:
        return Register(ln, m, value, scaler, unit)

    def volts(salt: int) -> Callable[[], bytes]:
        return lambda: axdr.long_unsigned(2300 + _wiggle(m, salt, 40))

    def amps(salt: int) -> Callable[[], bytes]:
        # per phase: a third of the interval's average power at ~230 V, in 0.01 A
        return lambda: axdr.long_unsigned(max(0, c.power_w(m.now()) * 100 // 690 + _wiggle(m, salt, 3)))

    def tou(t: int, export: bool = False) -> Callable[[], bytes]:
        return lambda: axdr.double_long_unsigned(c.energy_tou(t, m.now(), export))

    spec = meter.spec
    items: list[CosemObject] = [
        Clock("0-0:1.0.0.255", m),
        Data("0-0:42.0.0.255", m, lambda: axdr.octet_string(spec.logical_device_name)),
        Data("0-0:96.1.0.255", m, lambda: axdr.octet_string(spec.serial.encode())),
        Data(FRAME_COUNTER, m, lambda: axdr.double_long_unsigned(m.client_ic_seen + 1)),
        Data("0-0:96.10.1.255", m, lambda: axdr.unsigned(amr_status(m))),
        reg("1-0:1.8.0.255", lambda: axdr.double_long_unsigned(c.energy_import(m.now())), 0, UNIT_WH),
        *(reg(f"1-0:1.8.{t}.255", tou(t), 0, UNIT_WH) for t in (1, 2, 3, 4)),
        reg("1-0:2.8.0.255", lambda: axdr.double_long_unsigned(c.energy_export(m.now())), 0, UNIT_WH),
        *(reg(f"1-0:2.8.{t}.255", tou(t, export=True), 0, UNIT_WH) for t in (1, 2, 3, 4)),
        reg("1-0:1.7.0.255", lambda: axdr.double_long_unsigned(c.power_w(m.now())), 0, UNIT_W),
        *(reg(f"1-0:{ch}.7.0.255", volts(ch), -1, UNIT_V) for ch in (32, 52, 72)),
        *(reg(f"1-0:{ch}.7.0.255", amps(ch), -2, UNIT_A) for ch in (31, 51, 71)),
        reg("1-0:14.7.0.255", lambda: axdr.long_unsigned(5000 + _wiggle(m, 14, 5)), -2, UNIT_HZ),
        LoadProfile("1-0:99.1.0.255", m, capacity=(history_days + 1) * 96),
        DisconnectControl("0-0:96.3.10.255", m),
        Account("0-0:19.0.0.255", m),
        Credit("0-0:19.10.0.255", m),
        TokenGateway("0-0:19.40.0.255", m),
        PushSetup(m, push_destination),
    ]
    objects: dict[Key, CosemObject] = {(o.class_id, o.ln): o for o in items}
    association = AssociationLN(m, objects)
    objects[(association.class_id, association.ln)] = association
    return objects
