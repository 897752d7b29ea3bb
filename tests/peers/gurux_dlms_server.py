"""An independent DLMS/COSEM meter for tests: Gurux's server classes (gurux-dlms, GPL-2.0) over TCP.

Run ONLY as a separate process (the product is Apache-2.0 and the pytest process must not import
gurux_dlms; tests/architecture checks it):

    python tests/peers/gurux_dlms_server.py --port P --config '{"auth": "low", "password": "12345678"}'

It prints one JSON line `{"ready": true, "port": P}` on stdout once it listens and logs to stderr.
`--config` is a JSON object (or a path to a JSON file); every key is optional, see `Config` in
gurux_meter.py. `--trace` logs every frame in hex.

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
A wrong password is refused with "authentication failure"; a wrong key makes the AARQ undecodable
or its GCM tag wrong, refused with "no reason given" (Gurux's choice). A ciphered APDU whose
invocation counter is not above the last one taken is a replay: an AARQ is refused (authentication
failure), anything else drops the connection (`check_invocation_counter`). With `state_file` the
counters and the relay state survive a restart, as in a meter's non-volatile memory.

Gurux 1.0.203's Python server is an incomplete port of its Java server; gurux_compat.py beside
this file supplies what it lacks (each gap named there). The meter's objects are in gurux_meter.py.
The APDU codec, AES-GCM, GMAC and block transfer are Gurux's; this file is the policy (who may
associate, replay protection, what the disconnect methods do) and the TCP loop, one thread per
connection (Gurux keeps association state per server object).
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
from typing import Any

from gurux_compat import Association, CompatServer, Reply, patch_gurux
from gurux_dlms.enums import Authentication, Conformance, Security, SourceDiagnostic
from gurux_dlms.objects import GXDLMSDisconnectControl
from gurux_dlms.objects.enums import ControlState
from gurux_meter import AUTH, Config, Meter

LOG = logging.getLogger("gurux-peer")


class Server(CompatServer):  # type: ignore[misc]  # (mypy does not resolve the sibling script modules)
    """One per TCP connection; the meter's objects are shared."""

    def __init__(self, meter: Meter, peer: str) -> None:
        self.meter, self.peer = meter, peer
        self.replayed = False  # the AARQ being handled reused an invocation counter
        cfg = meter.cfg
        super().__init__(bytes.fromhex(cfg.server_system_title), bytes.fromhex(cfg.block_cipher_key),
                         bytes.fromhex(cfg.authentication_key))  # fmt: skip
        association = Association()
        association.authenticationMechanismName.mechanismId = AUTH[cfg.auth]
        if cfg.auth == "low":
            association.secret = cfg.password.encode()
        self.add_objects(meter.objects, association)

    def reset(self, connect: bool = False) -> None:
        # Gurux zeroes the server's invocation counter at each association; a meter keeps counting
        # (a client that checks it refuses a repeated counter).
        super().reset(connect)
        meter = getattr(self, "meter", None)  # reset() also runs inside GXDLMSServer.__init__
        if meter is not None and self.settings.cipher is not None:
            self.settings.cipher.invocationCounter = meter.server_ic

    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        return bool(serverAddress == self.meter.cfg.server_address)

    def onValidateAuthentication(self, authentication: Any, password: Any) -> Any:
        cfg, client = self.meter.cfg, self.settings.clientAddress
        if self.replayed:
            ok = False
        elif client == cfg.public_client and client != cfg.client_address:
            ok = authentication == Authentication.NONE
        elif client == cfg.client_address:
            ok = authentication == AUTH[cfg.auth]
            if ok and cfg.auth == "low":
                ok = bytes(password or b"") == cfg.password.encode()
            if ok and cfg.auth == "hls_gmac":  # suite 0 here means authenticated and encrypted APDUs
                ok = self.settings.cipher.security == Security.AUTHENTICATION_ENCRYPTION
        else:
            ok = False
        LOG.info("%s: association of client %s with %s: %s", self.peer, client, authentication,
                 "accepted" if ok else "refused")  # fmt: skip
        return SourceDiagnostic.NONE if ok else SourceDiagnostic.AUTHENTICATION_FAILURE

    def onPreRead(self, args: Any = None) -> None:
        self.meter.before_read()

    def onConnected(self, connectionInfo: Any) -> None:
        LOG.info("%s: associated", self.peer)

    def onDisconnected(self, connectionInfo: Any) -> None:
        LOG.info("%s: released", self.peer)

    def onPreAction(self, args: Any) -> None:
        for e in args:
            if isinstance(e.target, GXDLMSDisconnectControl) and e.index in (1, 2):
                # GXDLMSDisconnectControl has no invoke(): class 70 reduced to remote_disconnect (1)
                # and remote_reconnect (2) acting at once (control mode 1 without the local paths).
                connect = e.index == 2
                e.target.outputState = connect
                e.target.controlState = ControlState.CONNECTED if connect else ControlState.DISCONNECTED
                e.handled, e.value = True, 0
                LOG.info("%s: disconnect control method %d: output_state %s", self.peer, e.index, connect)


def answer_general_glo(server: Server, apdu: bytes) -> None:
    """Answer a general-glo-ciphering request (0xDB) with general-glo-ciphering. Gurux does so only
    once the association is complete: its answer to reply_to_HLS_authentication (HLS pass 3, the
    association still pending) is a service-specific glo-action-response (0xCF) even though
    general-protection was negotiated, and dlms-cosem 21.3.2's APDU factory knows no 0xCC/0xCD/0xCF
    (KeyError 'Tag 207 is not available'). `mirror_general_ciphering: false` keeps Gurux's choice."""
    s = server.settings
    LOG.debug("general-glo-ciphering in; general-protection negotiated: %s",
              bool(s.negotiatedConformance & Conformance.GENERAL_PROTECTION))  # fmt: skip
    s.negotiatedConformance |= Conformance.GENERAL_PROTECTION
    s.proposedConformance |= Conformance.GENERAL_PROTECTION
    if len(apdu) > 9 and apdu[1] == 8:  # the client's system title (tag, length 8, title)
        s.preEstablishedSystemTitle = bytearray(apdu[2:10])


def _ber_length(buf: bytes, pos: int) -> tuple[int, int]:
    """(length, position after it) of a BER length at `pos`."""
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    return int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def client_ic(apdu: bytes) -> int | None:
    """The invocation counter of a ciphered APDU from the client, or None if it is not ciphered:
    an AARQ whose user-information is a glo-initiate-request (0x21), a service-specific glo-/ded-
    request (tag, length, SC, IC) or a general-glo-ciphering (tag, system title, length, SC, IC)."""
    try:
        if apdu[0] == 0x60:  # AARQ: find the user-information [30] (0xBE) among its elements
            _, pos = _ber_length(apdu, 1)
            while pos < len(apdu):
                tag = apdu[pos]
                size, body = _ber_length(apdu, pos + 1)
                if tag == 0xBE and apdu[body] == 0x04 and apdu[body + 2] == 0x21:
                    return client_ic(apdu[body + 2 :])
                pos = body + size
            return None
        if apdu[0] in (0x21, 0xC8, 0xCB, 0xC9, 0xD0, 0xD3, 0xD1):  # glo-initiate, glo-/ded-get/set/action
            pos = 1
        elif apdu[0] == 0xDB:
            pos = 2 + apdu[1]
        else:
            return None
        _, pos = _ber_length(apdu, pos)
        return int.from_bytes(apdu[pos + 1 : pos + 5], "big") if len(apdu) >= pos + 5 else None
    except IndexError:
        return None


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def serve_connection(meter: Meter, conn: socket.socket, peer: str) -> None:
    with conn:
        try:
            _serve(meter, conn, peer)
        except (ConnectionError, OSError):
            LOG.info("%s: connection closed", peer)
        except Exception:
            LOG.exception("%s: the connection handler failed", peer)


def _serve(meter: Meter, conn: socket.socket, peer: str) -> None:
    server = Server(meter, peer)
    while True:
        header = _recv_exact(conn, 8)  # wrapper: version, source wPort, destination wPort, length
        frame = header + _recv_exact(conn, int.from_bytes(header[6:8], "big"))
        apdu = frame[8:]
        LOG.debug("%s: <- %s", peer, frame.hex())
        with meter.lock:
            ic = client_ic(apdu)
            if ic is not None and ic <= meter.client_ic and meter.cfg.check_invocation_counter:
                LOG.warning("%s: invocation counter %d not above %d: a replay", peer, ic, meter.client_ic)
                if apdu[0] != 0x60:
                    return  # a meter discards a replayed APDU; this one drops the connection
                server.replayed = True
            if apdu[:1] == b"\xdb" and meter.cfg.mirror_general_ciphering:
                answer_general_glo(server, apdu)
            sr = Reply(bytearray(frame))
            server.failed, server.settings.aare_result = False, None
            server.handleRequest(sr)
            # A counter counts once its APDU authenticated (an AARQ with a wrong key does not).
            taken = not server.failed and not server.replayed and server.settings.aare_result in (None, 0)
            if ic is not None and taken:
                meter.client_ic = max(meter.client_ic, ic)
            server.replayed = False
            if server.settings.cipher is not None:
                meter.server_ic = max(meter.server_ic, server.settings.cipher.invocationCounter)
            meter.save_state()
        if sr.reply:
            LOG.debug("%s: -> %s", peer, bytes(sr.reply).hex())
            conn.sendall(bytes(sr.reply))
        else:
            LOG.warning("%s: no reply to %s", peer, frame.hex())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}", help="JSON object or path to a JSON file")
    parser.add_argument("--trace", action="store_true", help="log every frame in hex")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.trace else logging.INFO,
                        format="gurux-peer %(levelname)s %(message)s")  # fmt: skip
    patch_gurux()
    meter = Meter(Config.parse(args.config))
    listener = socket.create_server((meter.cfg.host, args.port))
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
