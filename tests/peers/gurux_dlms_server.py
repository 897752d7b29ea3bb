"""An independent DLMS/COSEM meter for tests: Gurux's server classes (gurux-dlms, GPL-2.0) over TCP.

Run ONLY as a separate process (the product is Apache-2.0 and the pytest process must not import
gurux_dlms; tests/architecture checks it):

    python tests/peers/gurux_dlms_server.py --port P --config '{"auth": "low", "password": "12345678"}'

It prints one JSON line `{"ready": true, "port": P}` on stdout once it listens and logs to stderr.
`--config` is a JSON object (or a path to a JSON file); every key is optional, see `Config` below.

What it serves, logical-name referencing, IEC 62056-47 wrapper (interface type WRAPPER), server
logical address `server_address` (default 1):
  1-0:1.8.0.255   Register  energy import, Wh, scaler 0, value `energy_import_wh`
  1-0:2.8.0.255   Register  energy export, Wh, scaler 0
  1-0:1.8.1.255 / 1-0:1.8.2.255  Registers  import T1 / T2, Wh, scaler 0
  1-0:32.7.0.255  Register  voltage L1, V, scaler -1 (value 2301 = 230.1 V)
  1-0:1.6.0.255   Extended register  maximum demand, W, scaler 0, with capture time
  0-0:96.1.0.255  Data      serial number (octet string)
  0-0:96.10.1.255 Data      status byte (unsigned)
  0-0:43.1.0.255  Data      invocation (frame) counter: the next counter the client must use
  0-0:1.0.0.255   Clock     UTC (deviation 0), shifted by `clock_offset_s`
  1-0:99.1.0.255  Profile generic: clock, status, energy import; 15-minute capture period;
                  `profile_days` of history, then one row per quarter hour as time passes;
                  range reads (RangeDescriptor on the clock column) and entry reads.
  0-0:96.3.10.255 Disconnect control: remote_disconnect / remote_reconnect change output_state.
Clients: the public client (SAP `public_client`, default 16) associates with lowest security; the
client `client_address` (default 1) must use the configured `auth`: "none", "low" (password) or
"hls_gmac" (HLS-GMAC, security suite 0, authenticated and encrypted APDUs with the given keys).

Gurux 1.0.203's Python server is an incomplete port of its Java server: several methods it calls
do not exist (GXServerReply.setReply, GXDLMSServer.notifyRead/setTransaction/notifyConnected, ...)
and a few paths are broken (HLS reply, selective access by range). The shims below supply or fix
exactly those and are marked "Gurux 1.0.203 gap"; the APDU codec, ciphering and GMAC are Gurux's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime
from gurux_dlms._GXAPDU import _GXAPDU
from gurux_dlms.enums import (
    Authentication,
    Conformance,
    DataType,
    InterfaceType,
    Security,
    SourceDiagnostic,
    Unit,
)
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.GXDLMSSettings import GXDLMSSettings
from gurux_dlms.GXSecure import GXSecure
from gurux_dlms.GXServerReply import GXServerReply
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo
from gurux_dlms.objects import (
    GXDLMSAssociationLogicalName,
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSExtendedRegister,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.objects.enums import AssociationStatus, ControlMode, ControlState
from gurux_dlms.secure import GXDLMSSecureServer
from gurux_dlms.ValueEventArgs import ValueEventArgs

LOG = logging.getLogger("gurux-peer")
QUARTER = dt.timedelta(minutes=15)
AUTH = {"none": Authentication.NONE, "low": Authentication.LOW, "hls_gmac": Authentication.HIGH_GMAC}


@dataclass(slots=True)
class Config:
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
    #: Answer general-glo-ciphering with general-glo-ciphering (see _answer_general_glo).
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


class Meter:
    """The objects and their state, shared by every connection (one lock guards them)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.started = dt.datetime.now(dt.UTC)
        #: The newest profile row at start; history runs back `profile_days` from here.
        self.anchor = self.started.replace(second=0, microsecond=0) - dt.timedelta(minutes=self.started.minute % 15)
        self.first_row = self.anchor - dt.timedelta(days=cfg.profile_days)
        self.gaps = [(_utc(a), _utc(b)) for a, b in cfg.profile_gaps]
        self.status_at = {_utc(k): v for k, v in cfg.profile_status.items()}
        #: The highest invocation counter received from a ciphering client (0-0:43.1.0.255 shows +1).
        self.client_ic = 0
        #: The server's own invocation counter, kept across associations as a real meter does.
        self.server_ic = 1

        def register(ln: str, value: int, scaler: int, unit: Unit) -> GXDLMSRegister:
            r = GXDLMSRegister(ln)
            r.value, r.scaler, r.unit = value, 10.0**scaler, unit
            r.setDataType(2, DataType.UINT32 if value >= 0 else DataType.INT32)
            return r

        self.energy = register("1.0.1.8.0.255", cfg.energy_import_wh, 0, Unit.ACTIVE_ENERGY)
        self.voltage = register("1.0.32.7.0.255", cfg.voltage_dv, -1, Unit.VOLTAGE)
        self.voltage.setDataType(2, DataType.UINT16)
        demand = GXDLMSExtendedRegister("1.0.1.6.0.255")
        demand.value, demand.scaler, demand.unit = cfg.max_demand_w, 1.0, Unit.ACTIVE_POWER
        demand.setDataType(2, DataType.UINT32)
        demand.captureTime = GXDateTime(self.anchor)
        demand.status = 0
        serial = GXDLMSData("0.0.96.1.0.255")
        serial.value = cfg.serial.encode()
        serial.setDataType(2, DataType.OCTET_STRING)
        self.status = GXDLMSData("0.0.96.10.1.255")
        self.status.value = cfg.status
        self.status.setDataType(2, DataType.UINT8)
        self.frame_counter = GXDLMSData("0.0.43.1.0.255")
        self.frame_counter.value = 1
        self.frame_counter.setDataType(2, DataType.UINT32)
        self.clock = GXDLMSClock("0.0.1.0.0.255")
        self.disconnect = GXDLMSDisconnectControl("0.0.96.3.10.255")
        self.disconnect.outputState = cfg.output_state
        self.disconnect.controlState = ControlState.CONNECTED if cfg.output_state else ControlState.DISCONNECTED
        self.disconnect.controlMode = ControlMode.MODE_1
        self.profile = RangeProfile(self)
        self.objects: list[Any] = [
            self.energy,
            register("1.0.2.8.0.255", cfg.energy_export_wh, 0, Unit.ACTIVE_ENERGY),
            register("1.0.1.8.1.255", cfg.energy_t1_wh, 0, Unit.ACTIVE_ENERGY),
            register("1.0.1.8.2.255", cfg.energy_t2_wh, 0, Unit.ACTIVE_ENERGY),
            self.voltage, demand, serial, self.status, self.frame_counter, self.clock, self.disconnect, self.profile,
        ]

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.cfg.clock_offset_s)

    def rows(self, start: dt.datetime | None, end: dt.datetime | None) -> list[tuple[dt.datetime, int, int]]:
        """Profile rows (time, status, energy Wh) with start <= time <= end, oldest first."""
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
    """Profile generic whose buffer is computed per read. Gurux 1.0.203 gap: its own selective
    access by range compares a datetime with 0 and drops the columns, so attribute 2 is encoded
    here (Gurux's encoder, rows chosen by us)."""

    def __init__(self, meter: Meter) -> None:
        super().__init__("1.0.99.1.0.255")
        self.meter = meter
        self.capturePeriod = 900
        self.addCaptureObject(meter.clock, 2, 0)
        self.addCaptureObject(meter.status, 2, 0)
        self.addCaptureObject(meter.energy, 2, 0)
        self.profileEntries = 96 * 366
        self.sortObject = meter.clock
        self.sortObjectAttributeIndex = 2

    def getValue(self, settings: Any, e: Any) -> Any:
        if e.index == 7:
            return len(self.meter.rows(None, None))
        if e.index != 2:
            return super().getValue(settings, e)
        rows = self.meter.rows(None, None)
        if e.selector == 1 and e.parameters:
            start, end = (_decode_time(settings, p) for p in (e.parameters[1], e.parameters[2]))
            rows = self.meter.rows(start, end)
        elif e.selector == 2 and e.parameters:
            first, count = int(e.parameters[0]), int(e.parameters[1])
            first = max(first, 1)
            rows = rows[first - 1 : first - 1 + count] if count else rows[first - 1 :]
        LOG.info("profile read: selector %s, %d rows", e.selector, len(rows))
        buff = GXByteBuffer()
        buff.setUInt8(DataType.ARRAY)
        _GXCommon.setObjectCount(len(rows), buff)
        for when, status, energy in rows:
            buff.setUInt8(DataType.STRUCTURE)
            _GXCommon.setObjectCount(3, buff)
            _GXCommon.setData(settings, buff, DataType.OCTET_STRING, GXDateTime(when))
            _GXCommon.setData(settings, buff, DataType.UINT8, status)
            _GXCommon.setData(settings, buff, DataType.UINT32, energy)
        e.byteArray = True
        return buff.array()


def _decode_time(settings: Any, raw: Any) -> dt.datetime:
    info = _GXDataInfo()
    info.type_ = DataType.DATETIME
    value = _GXCommon.getData(settings, GXByteBuffer(raw), info)
    when: dt.datetime = value.value if isinstance(value, GXDateTime) else value
    if when.tzinfo is None:  # a date-time without deviation is taken as UTC
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC)


class Association(GXDLMSAssociationLogicalName):  # type: ignore[misc]
    """Gurux 1.0.203 gap: its HLS reply check does int(bytes); this one checks the client's
    f(StoC) with Gurux's GMAC (GXSecure.secure) and answers f(CtoS) the same way."""

    def getAssociationStatus(self) -> Any:  # Gurux 1.0.203 gap: called by the method handler
        return self.associationStatus

    def invoke(self, settings: Any, e: Any) -> Any:
        if e.index != 1 or settings.authentication != Authentication.HIGH_GMAC:
            return super().invoke(settings, e)
        reply = bytes(e.parameters)  # SC | IC(4) | GMAC tag(12)
        ic = int.from_bytes(reply[1:5], "big")
        expected = GXSecure.secure(settings, settings.cipher, ic, settings.stoCChallenge, settings.sourceSystemTitle)
        if bytes(expected) != reply:
            LOG.warning("HLS: the client's reply to the challenge is wrong (wrong authentication key?)")
            self.associationStatus = AssociationStatus.NON_ASSOCIATED
            return None
        self.associationStatus = AssociationStatus.ASSOCIATED
        ic = settings.cipher.invocationCounter
        return GXSecure.secure(settings, settings.cipher, ic, settings.getCtoSChallenge(), settings.cipher.systemTitle)


class Reply(GXServerReply):  # type: ignore[misc]
    """Gurux 1.0.203 gap: GXDLMSServer calls these, GXServerReply does not define them."""

    def setReply(self, value: Any) -> None:
        self.reply = value

    def getConnectionInfo(self) -> Any:
        return self.connectionInfo

    def setCount(self, value: int) -> None:
        self.count = value

    def getCount(self) -> int:
        return int(self.count)


class Server(GXDLMSSecureServer):  # type: ignore[misc]
    """One per TCP connection (Gurux keeps association state in the server); the objects are shared."""

    def __init__(self, meter: Meter, peer: str) -> None:
        super().__init__(True, InterfaceType.WRAPPER)
        self.meter, self.peer = meter, peer
        cfg = meter.cfg
        # Gurux 1.0.203 gap: GXDLMSSecureServer sets `settings.ciphering`, the code reads `settings.cipher`.
        cipher = GXCiphering(bytes.fromhex(cfg.server_system_title))
        cipher.blockCipherKey = bytearray(bytes.fromhex(cfg.block_cipher_key))
        cipher.authenticationKey = bytearray(bytes.fromhex(cfg.authentication_key))
        self.settings.cipher = cipher
        association = Association()
        association.authenticationMechanismName.mechanismId = AUTH[cfg.auth]
        if cfg.auth == "low":
            association.secret = cfg.password.encode()
        for obj in [*meter.objects, association]:
            self.items.append(obj)
            # Gurux 1.0.203 gap: initialize() appends the whole collection as one object when empty.
            association.objectList.append(obj)
        self.initialize()

    # Gurux 1.0.203 gap: a reset per association zeroes the server's invocation counter; a meter
    # keeps counting (a client that checks it would refuse a repeated counter).
    def reset(self, connect: bool = False) -> None:
        meter = getattr(self, "meter", None)
        super().reset(connect)
        if meter is not None and self.settings.cipher is not None:
            self.settings.cipher.invocationCounter = meter.server_ic

    def reportError(self, command: Any, error: Any) -> Any:
        # Gurux 1.0.203 gap: the error reply is appended to (and ciphered with) the half-made reply.
        LOG.warning("%s: Gurux failed on command %s, answering %s", self.peer, command, error, exc_info=True)
        self.replyData.clear()
        return super().reportError(command, error)

    def handleReleaseRequest(self, data: Any) -> None:
        # Gurux 1.0.203 gap: its RLRE gives the user-information lengths one and seven bytes short
        # (dlms-cosem refuses it); same content, right lengths (IEC 62056-5-3 RLRE, reason normal).
        info = bytes(_GXAPDU.getUserInformation(self.settings, self.settings.cipher))
        user = bytes([0x04, len(info)]) + info
        body = bytes([0x80, 0x01, 0x00, 0xBE, len(user)]) + user
        self.replyData.set(bytes([0x63, len(body)]) + body)

    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        return bool(serverAddress == self.meter.cfg.server_address)

    def onValidateAuthentication(self, authentication: Any, password: Any) -> Any:
        cfg, client = self.meter.cfg, self.settings.clientAddress
        if client == cfg.public_client and client != cfg.client_address:
            ok = authentication == Authentication.NONE
        elif client == cfg.client_address:
            ok = authentication == AUTH[cfg.auth]
            if ok and cfg.auth == "low":
                ok = bytes(password or b"") == cfg.password.encode()
            if ok and cfg.auth == "hls_gmac":
                ok = self.settings.cipher.security == Security.AUTHENTICATION_ENCRYPTION
        else:
            ok = False
        LOG.info("%s: association of client %s with %s: %s", self.peer, client, authentication,
                 "accepted" if ok else "refused")
        return SourceDiagnostic.NONE if ok else SourceDiagnostic.AUTHENTICATION_FAILURE

    def onPreGet(self, args: Any) -> None:
        pass

    def onPostGet(self, args: Any) -> None:
        pass

    def onFindObject(self, objectType: Any, sn: Any, ln: Any) -> Any:
        return None

    def notifyRead(self) -> None:  # Gurux 1.0.203 gap: called before every GET.Normal
        now = self.meter.now()
        self.meter.clock.time = GXDateTime(now)
        self.meter.frame_counter.value = self.meter.client_ic + 1

    def onPreRead(self, args: Any = None) -> None:
        self.notifyRead()

    def onPostRead(self, args: Any = None) -> None:
        pass

    def onPreWrite(self, args: Any) -> None:
        pass

    def onPostWrite(self, args: Any) -> None:
        pass

    def setTransaction(self, value: Any) -> None:  # Gurux 1.0.203 gap
        self.transaction = value

    def onConnected(self, connectionInfo: Any) -> None:
        LOG.info("%s: associated", self.peer)

    def notifyConnected(self, connectionInfo: Any) -> None:  # Gurux 1.0.203 gap (after HLS pass 4)
        self.onConnected(connectionInfo)

    def onInvalidConnection(self, connectionInfo: Any) -> None:
        LOG.info("%s: association refused", self.peer)

    def onDisconnected(self, connectionInfo: Any) -> None:
        LOG.info("%s: released", self.peer)

    def onGetAttributeAccess(self, arg: Any) -> Any:
        from gurux_dlms.enums import AccessMode

        return AccessMode.READ_WRITE

    def onGetMethodAccess(self, arg: Any) -> Any:
        from gurux_dlms.enums import MethodAccessMode

        return MethodAccessMode.ACCESS

    def onPreAction(self, args: Any) -> None:
        for e in args:
            if isinstance(e.target, GXDLMSDisconnectControl) and e.index in (1, 2):
                # Gurux 1.0.203 gap: GXDLMSDisconnectControl has no invoke(); the state machine of
                # IEC 62056-6-2 class 70 reduced to remote_disconnect (1) and remote_reconnect (2).
                connect = e.index == 2
                e.target.outputState = connect
                e.target.controlState = ControlState.CONNECTED if connect else ControlState.DISCONNECTED
                e.handled = True
                e.value = 0

    def onPostAction(self, args: Any) -> None:
        for e in args:
            if isinstance(e.target, GXDLMSDisconnectControl):
                LOG.info("%s: disconnect control method %d: output_state %s", self.peer, e.index, e.target.outputState)


def _aare(settings: Any, data: Any, result: Any, diagnostic: Any, cipher: Any, errorData: Any,
          encryptedData: Any) -> None:
    """Gurux 1.0.203 gap: its generateAARE calls setUInt8() without a value (every HLS or ciphered
    AARE fails) and gives the challenge one length short. The AARE of IEC 62056-5-3 §7.2 with the
    same fields; the xDLMS initiate-response (ciphered when the AARQ was) is still Gurux's, but
    its invocation counter is then counted (Gurux 1.0.203 reuses it for the next APDU)."""
    ciphered = bool(cipher and cipher.isCiphered())
    out = bytearray([0xA1, 0x09, 0x06, 0x07, 0x60, 0x85, 0x74, 0x05, 0x08, 0x01, 0x03 if ciphered else 0x01])
    out += bytes([0xA2, 0x03, 0x02, 0x01, int(result)])
    out += bytes([0xA3, 0x05, 0xA1, 0x03, 0x02, 0x01, int(diagnostic)])
    if cipher and (settings.authentication == Authentication.HIGH_GMAC or ciphered):
        title = bytes(cipher.systemTitle)
        out += bytes([0xA4, len(title) + 2, 0x04, len(title)]) + title
    if settings.authentication > Authentication.LOW:
        challenge = bytes(settings.stoCChallenge)
        out += bytes([0x88, 0x02, 0x07, 0x80, 0x89, 0x07, 0x60, 0x85, 0x74, 0x05, 0x08, 0x02,
                      int(settings.authentication)])
        out += bytes([0xAA, len(challenge) + 2, 0x80, len(challenge)]) + challenge
    if result == 0 or not ciphered:
        info = bytes(errorData) if errorData else bytes(_GXAPDU.getUserInformation(settings, cipher))
        if ciphered and not errorData:  # Gurux does not count the glo-initiate-response's counter
            cipher.invocationCounter += 1
        out += bytes([0xBE, len(info) + 2, 0x04, len(info)]) + info
    data.set(bytes([0x61, len(out)]) + bytes(out))


_GXAPDU.generateAARE = _aare

# Gurux 1.0.203 gap: the method handler calls onPreAction(list(e)) on one ValueEventArgs.
if not hasattr(ValueEventArgs, "__iter__"):
    ValueEventArgs.__iter__ = lambda self: iter([self])
# Gurux 1.0.203 gap: the method handler calls settings.setConnected() after an HLS reply.
if not hasattr(GXDLMSSettings, "setConnected"):
    GXDLMSSettings.setConnected = lambda self, value: setattr(self, "connected", value)


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def serve_connection(meter: Meter, conn: socket.socket, peer: str) -> None:
    try:
        _serve(meter, conn, peer)
    except Exception:
        LOG.exception("%s: the connection handler failed", peer)
        conn.close()


def _serve(meter: Meter, conn: socket.socket, peer: str) -> None:
    server = Server(meter, peer)
    with conn:
        try:
            while True:
                header = _recv_exact(conn, 8)
                frame = header + _recv_exact(conn, int.from_bytes(header[6:8], "big"))
                with meter.lock:
                    _note_client_ic(meter, frame[8:])
                    if frame[8:9] == b"\xdb" and meter.cfg.mirror_general_ciphering:
                        _answer_general_glo(server, frame[8:])
                    sr = Reply(bytearray(frame))
                    server.handleRequest(sr)
                    if server.settings.cipher is not None:
                        meter.server_ic = max(meter.server_ic, server.settings.cipher.invocationCounter)
                LOG.debug("%s: <- %s", peer, frame.hex())
                if sr.reply:
                    LOG.debug("%s: -> %s", peer, bytes(sr.reply).hex())
                    conn.sendall(bytes(sr.reply))
                else:
                    LOG.warning("%s: no reply to %s", peer, frame.hex())
        except (ConnectionError, OSError):
            LOG.info("%s: connection closed", peer)


def _answer_general_glo(server: Server, apdu: bytes) -> None:
    """Answer a general-glo-ciphering request with general-glo-ciphering. Gurux picks it only when
    the general-protection conformance bit was negotiated; dlms-cosem 21.3.2 sends 0xDB without
    proposing that bit and cannot parse the service-specific glo-*-response (0xCC, 0xCF) Gurux
    would send instead (`mirror_general_ciphering: false` keeps Gurux's choice)."""
    s = server.settings
    s.negotiatedConformance |= Conformance.GENERAL_PROTECTION
    s.proposedConformance |= Conformance.GENERAL_PROTECTION
    if len(apdu) > 9 and apdu[1] == 8:  # the client's system title (tag, length 8, title)
        s.preEstablishedSystemTitle = bytearray(apdu[2:10])


def _note_client_ic(meter: Meter, apdu: bytes) -> None:
    """Remember the client's invocation counter from a ciphered APDU: service-specific glo-/ded-
    (tag, length, SC, IC) or general-glo-ciphering (tag, system title, length, SC, IC)."""
    if not apdu:
        return
    if apdu[0] in (0xC8, 0xCB, 0xC9, 0xD0, 0xD3, 0xD1):  # glo-get/set/action, ded-*
        pos = 1
    elif apdu[0] == 0xDB and len(apdu) > 2:
        pos = 2 + apdu[1]
    else:
        return
    if pos < len(apdu):
        pos += 1 if apdu[pos] < 0x80 else 1 + (apdu[pos] & 0x7F)  # the BER length of the ciphered part
    if len(apdu) >= pos + 5:
        meter.client_ic = max(meter.client_ic, int.from_bytes(apdu[pos + 1 : pos + 5], "big"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}", help="JSON object or path to a JSON file")
    parser.add_argument("--trace", action="store_true", help="log every frame in hex")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.trace else logging.INFO, format="gurux-peer %(levelname)s %(message)s")
    meter = Meter(Config.parse(args.config))
    listener = socket.create_server((meter.cfg.host, args.port), reuse_port=False)
    listener.listen(16)
    print(json.dumps({"ready": True, "port": listener.getsockname()[1]}), flush=True)
    sys.stdout = sys.stderr  # Gurux prints ("Encryption is applied."); stdout carries only the ready line
    LOG.info("listening on %s:%d, auth %s", meter.cfg.host, args.port, meter.cfg.auth)
    while True:
        conn, addr = listener.accept()
        peer = f"{addr[0]}:{addr[1]}"
        threading.Thread(target=serve_connection, args=(meter, conn, peer), daemon=True, name=peer).start()


if __name__ == "__main__":
    main()
