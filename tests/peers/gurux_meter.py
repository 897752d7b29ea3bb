"""The meter the Gurux peer serves: its config and its COSEM objects (Gurux's object classes, so
Gurux encodes every attribute). Imported only by gurux_dlms_server.py, a separate process."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime
from gurux_dlms.enums import Authentication, DataType, Unit
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSExtendedRegister,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.objects.enums import ControlMode, ControlState

LOG = logging.getLogger("gurux-peer")
QUARTER = dt.timedelta(minutes=15)
AUTH = {"none": Authentication.NONE, "low": Authentication.LOW, "hls_gmac": Authentication.HIGH_GMAC}


@dataclass(slots=True)
class Config:
    """Everything `--config` may set (JSON keys = field names); the defaults are a plausible meter."""

    host: str = "127.0.0.1"
    auth: str = "none"  # none | low | hls_gmac, for the client at `client_address`
    password: str = "12345678"
    block_cipher_key: str = "000102030405060708090A0B0C0D0E0F"
    authentication_key: str = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"
    server_system_title: str = "4755525558000001"  # "GURUX" + 000001
    server_address: int = 1
    client_address: int = 1
    public_client: int = 16  # lowest security, always allowed (reads the frame counter before HLS)
    serial: str = "GRX0000000001"
    energy_import_wh: int = 12345678
    energy_export_wh: int = 2345
    energy_t1_wh: int = 8000000
    energy_t2_wh: int = 4345678
    voltage_dv: int = 2301  # scaler -1: 230.1 V
    max_demand_w: int = 4200
    status: int = 0
    profile_days: int = 2
    interval_wh: int = 250  # energy added per quarter hour in the profile
    clock_offset_s: int = 0
    #: Status byte per row, by ISO UTC timestamp of the row ("2026-12-07T10:15:00Z": 0x80).
    profile_status: dict[str, int] = field(default_factory=dict)
    #: Rows left out of the profile (a gap in meter memory), as [from, to) ISO UTC pairs.
    profile_gaps: list[list[str]] = field(default_factory=list)
    output_state: bool = True
    #: Refuse an AARQ (authentication failure) or drop the connection on a ciphered APDU whose
    #: invocation counter is not above the last one received (IEC 62056-5-3 replay protection).
    check_invocation_counter: bool = True
    #: The last client invocation counter "seen" at start (-1: none; 0-0:43.1.0.255 shows it + 1).
    last_client_invocation_counter: int = -1
    #: A JSON file where the meter keeps its counters and relay state across restarts, as a meter
    #: keeps them in non-volatile memory ("": forget them at exit).
    state_file: str = ""
    #: Answer general-glo-ciphering with general-glo-ciphering, also to the HLS reply (Gurux answers
    #: that one service-specific, which dlms-cosem cannot parse: gurux_dlms_server.answer_general_glo).
    mirror_general_ciphering: bool = True

    @classmethod
    def parse(cls, text: str) -> Config:
        raw = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            msg = f"unknown config keys: {sorted(unknown)}"
            raise SystemExit(msg)
        cfg = cls(**raw)
        if cfg.auth not in AUTH:
            msg = f"config auth {cfg.auth!r}: expected one of {sorted(AUTH)}"
            raise SystemExit(msg)
        return cfg


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def _register(ln: str, value: int, scaler: int, unit: Unit, datatype: DataType = DataType.UINT32) -> GXDLMSRegister:
    r = GXDLMSRegister(ln)
    r.value, r.scaler, r.unit = value, 10.0**scaler, unit  # Gurux keeps the scaler as 10**scaler
    r.setDataType(2, datatype)
    return r


class Meter:
    """The objects and their state, shared by every connection (`lock` guards them)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        started = dt.datetime.now(dt.UTC)
        #: The newest profile row at start; history runs back `profile_days` from here.
        self.anchor = started.replace(second=0, microsecond=0) - dt.timedelta(minutes=started.minute % 15)
        self.first_row = self.anchor - dt.timedelta(days=cfg.profile_days)
        self.gaps = [(_utc(a), _utc(b)) for a, b in cfg.profile_gaps]
        self.status_at = {_utc(k): v for k, v in cfg.profile_status.items()}
        #: The highest invocation counter received from a ciphering client (0-0:43.1.0.255 shows +1).
        self.client_ic = cfg.last_client_invocation_counter
        #: The server's own invocation counter, kept across associations as a real meter does.
        self.server_ic = 1
        self._saved: dict[str, Any] | None = None

        self.energy = _register("1.0.1.8.0.255", cfg.energy_import_wh, 0, Unit.ACTIVE_ENERGY)
        demand = GXDLMSExtendedRegister("1.0.1.6.0.255")
        demand.value, demand.scaler, demand.unit = cfg.max_demand_w, 1.0, Unit.ACTIVE_POWER
        demand.status, demand.captureTime = 0, GXDateTime(self.anchor)
        demand.setDataType(2, DataType.UINT32)
        demand.setDataType(4, DataType.UINT8)
        serial = GXDLMSData("0.0.96.1.0.255")
        serial.value = cfg.serial.encode()
        serial.setDataType(2, DataType.OCTET_STRING)
        self.status = GXDLMSData("0.0.96.10.1.255")
        self.status.value = cfg.status
        self.status.setDataType(2, DataType.UINT8)
        self.frame_counter = GXDLMSData("0.0.43.1.0.255")
        self.frame_counter.value = self.client_ic + 1
        self.frame_counter.setDataType(2, DataType.UINT32)
        self.clock = GXDLMSClock("0.0.1.0.0.255")
        self.disconnect = GXDLMSDisconnectControl("0.0.96.3.10.255")
        self.disconnect.outputState = cfg.output_state
        self.disconnect.controlState = ControlState.CONNECTED if cfg.output_state else ControlState.DISCONNECTED
        self.disconnect.controlMode = ControlMode.MODE_1
        self._load_state()
        self.objects: list[Any] = [
            self.energy,
            _register("1.0.2.8.0.255", cfg.energy_export_wh, 0, Unit.ACTIVE_ENERGY),
            _register("1.0.1.8.1.255", cfg.energy_t1_wh, 0, Unit.ACTIVE_ENERGY),
            _register("1.0.1.8.2.255", cfg.energy_t2_wh, 0, Unit.ACTIVE_ENERGY),
            _register("1.0.32.7.0.255", cfg.voltage_dv, -1, Unit.VOLTAGE, DataType.UINT16),
            demand, serial, self.status, self.frame_counter, self.clock, self.disconnect, RangeProfile(self),
        ]  # fmt: skip

    def _state(self) -> dict[str, Any]:
        return {"client_ic": self.client_ic, "server_ic": self.server_ic, "output_state": self.disconnect.outputState}

    def _load_state(self) -> None:
        path = Path(self.cfg.state_file) if self.cfg.state_file else None
        if path is None or not path.exists():
            return
        state = json.loads(path.read_text())
        self.client_ic, self.server_ic = state["client_ic"], state["server_ic"]
        connected = bool(state["output_state"])
        self.disconnect.outputState = connected
        self.disconnect.controlState = ControlState.CONNECTED if connected else ControlState.DISCONNECTED
        LOG.info("state from %s: %s", path, state)

    def save_state(self) -> None:
        """Write the state file if there is one and the state changed (called after each request)."""
        if not self.cfg.state_file:
            return
        state = self._state()
        if state != self._saved:
            path = Path(self.cfg.state_file)
            path.with_suffix(".tmp").write_text(json.dumps(state))
            path.with_suffix(".tmp").replace(path)
            self._saved = state

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.cfg.clock_offset_s)

    def before_read(self) -> None:
        """What a GET sees is the meter's now: its clock, and the next invocation counter."""
        self.clock.time = GXDateTime(self.now())
        self.frame_counter.value = self.client_ic + 1

    def rows(self, start: dt.datetime | None, end: dt.datetime | None) -> list[tuple[dt.datetime, int, int]]:
        """Profile rows (time, status, energy Wh) with start <= time <= end, oldest first: the
        history, then one row per quarter hour up to the meter's now (gaps left out)."""
        last = self.now()
        t = self.first_row if start is None or start < self.first_row else start
        t = t.replace(second=0, microsecond=0)
        if t.minute % 15:
            t += dt.timedelta(minutes=15 - t.minute % 15)
        end = last if end is None or end > last else end
        out = []
        while t <= end:
            if not any(a <= t < b for a, b in self.gaps):
                steps = int((t - self.anchor) / QUARTER)
                out.append((t, self.status_at.get(t, 0), self.cfg.energy_import_wh + steps * self.cfg.interval_wh))
            t += QUARTER
        return out


class RangeProfile(GXDLMSProfileGeneric):  # type: ignore[misc]
    """1-0:99.1.0.255, its buffer computed per read. Gurux 1.0.203's own selective access by range
    compares a datetime with 0 and loses the columns, and by entry takes to_entry as a count, so
    rows and columns are chosen here (IEC 62056-6-2 class 7, selectors 1 and 2) and Gurux encodes."""

    TYPES = (DataType.OCTET_STRING, DataType.UINT8, DataType.UINT32)

    def __init__(self, meter: Meter) -> None:
        super().__init__("1.0.99.1.0.255")
        self.meter = meter
        self.capturePeriod = 900
        for obj in (meter.clock, meter.status, meter.energy):
            self.addCaptureObject(obj, 2, 0)
        self.profileEntries = 96 * 366
        self.sortObject = meter.clock
        self.sortObjectAttributeIndex = 2

    def getValue(self, settings: Any, e: Any) -> Any:
        if e.index == 7:
            return len(self.meter.rows(None, None))
        if e.index != 2:
            return super().getValue(settings, e)
        rows: list[tuple[Any, ...]] = list(self.meter.rows(None, None))
        columns = list(range(len(self.TYPES)))
        if e.selector == 1 and e.parameters:  # range: restricting object, from, to, selected values
            start, end = (_decode_time(settings, p) for p in (e.parameters[1], e.parameters[2]))
            rows = list(self.meter.rows(start, end))
            columns = self._selected(e.parameters[3]) or columns
        elif e.selector == 2 and e.parameters:  # entry: from, to (0: last), from column, to column (0: last)
            first, last, col_first, col_last = (int(v) for v in e.parameters)
            rows = rows[max(first, 1) - 1 : last or None]
            columns = columns[max(col_first, 1) - 1 : col_last or None]
        LOG.info("profile read: selector %s, %d rows, columns %s", e.selector, len(rows), columns)
        buff = GXByteBuffer()
        buff.setUInt8(DataType.ARRAY)
        _GXCommon.setObjectCount(len(rows), buff)
        for row in rows:
            buff.setUInt8(DataType.STRUCTURE)
            _GXCommon.setObjectCount(len(columns), buff)
            for i in columns:
                value = GXDateTime(row[i]) if i == 0 else row[i]
                _GXCommon.setData(settings, buff, self.TYPES[i], value)
        e.byteArray = True
        return buff.array()

    def _selected(self, wanted: Any) -> list[int]:
        """Column indexes of the capture objects named in a range read's selected values."""
        out = []
        for ci, ln, attribute, _ in wanted or []:
            for i, (obj, co) in enumerate(self.captureObjects):
                if (obj.objectType, bytes(_GXCommon.logicalNameToBytes(obj.logicalName)), co.attributeIndex) == (
                    ci, bytes(ln), attribute,
                ):  # fmt: skip
                    out.append(i)
        return out


def _decode_time(settings: Any, raw: Any) -> dt.datetime:
    info = _GXDataInfo()
    info.type_ = DataType.DATETIME
    value = _GXCommon.getData(settings, GXByteBuffer(raw), info)
    when: dt.datetime = value.value if isinstance(value, GXDateTime) else value
    if when.tzinfo is None:  # a date-time without deviation is taken as UTC
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)
