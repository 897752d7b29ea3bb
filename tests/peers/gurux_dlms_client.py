"""An independent DLMS client for tests: Gurux's GXDLMSClient (GPL-2.0) over a plain TCP socket with the
IEC 62056-47 wrapper. Run ONLY as a separate process (`python tests/peers/gurux_dlms_client.py '<json>'`):
it prints one JSON object and exits; pytest never imports it (the project is Apache-2.0).

Input JSON: host, port, auth ("none" | "low" | "gmac"), password, ek, ak (hex), invocation_counter,
system_title (hex), days (profile range to read).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sys
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime, GXReplyData  # GPL: a separate process only
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureClient


class Link:
    def __init__(self, client: Any, sock: socket.socket) -> None:
        self.client, self.sock = client, sock

    def _recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("meter closed the connection")
            out += chunk
        return out

    def packet(self, data: Any, reply: Any) -> None:
        if data:
            self.sock.sendall(bytes(data))
        notify = GXReplyData()
        buffer = GXByteBuffer()
        while True:
            header = self._recv(8)
            buffer.set(header + self._recv(int.from_bytes(header[6:8], "big")))
            if self.client.getData(buffer, reply, notify):
                break
        if reply.error:
            raise RuntimeError(f"meter error {reply.error}")

    def block(self, frames: Any, reply: Any) -> None:
        for frame in frames if isinstance(frames, list) else [frames]:
            reply.clear()
            self.packet(frame, reply)
            while reply.isMoreData():
                self.packet(self.client.receiverReady(reply), reply)

    def read(self, obj: Any, attr: int) -> Any:
        reply = GXReplyData()
        self.block(self.client.read(obj, attr), reply)
        return self.client.updateValue(obj, attr, reply.value)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    auth = {"none": Authentication.NONE, "low": Authentication.LOW, "gmac": Authentication.HIGH_GMAC}[cfg["auth"]]
    client = GXDLMSSecureClient(True, 16 if auth == Authentication.NONE else 1, 1, auth,
                          cfg.get("password"), InterfaceType.WRAPPER)
    if auth == Authentication.HIGH_GMAC:
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.systemTitle = bytes.fromhex(cfg["system_title"])
        client.ciphering.blockCipherKey = bytes.fromhex(cfg["ek"])
        client.ciphering.authenticationKey = bytes.fromhex(cfg["ak"])
        client.ciphering.invocationCounter = cfg["invocation_counter"]
    out: dict[str, Any] = {}
    with socket.create_connection((cfg["host"], cfg["port"]), timeout=10) as sock:
        link = Link(client, sock)
        reply = GXReplyData()
        try:
            link.block(client.aarqRequest(), reply)
            client.parseAareResponse(reply.data)
            if auth == Authentication.HIGH_GMAC:
                reply.clear()
                link.block(client.getApplicationAssociationRequest(), reply)
                client.parseApplicationAssociationResponse(reply.data)
        except Exception as exc:  # the refusal is the answer the test wants to see
            print(json.dumps({"associated": False, "error": f"{type(exc).__name__}: {exc}"}))
            return
        out["associated"] = True
        energy = GXDLMSRegister("1.0.1.8.0.255")
        link.read(energy, 3)
        link.read(energy, 2)
        out["energy"] = [energy.value, energy.scaler, int(energy.unit)]
        volts = GXDLMSRegister("1.0.32.7.0.255")
        link.read(volts, 3)
        link.read(volts, 2)
        out["voltage"] = [volts.value, volts.scaler, int(volts.unit)]
        clock = GXDLMSClock("0.0.1.0.0.255")
        link.read(clock, 2)
        out["clock"] = clock.time.value.astimezone(dt.UTC).isoformat()
        out["ldn"] = bytes(link.read(GXDLMSData("0.0.42.0.0.255"), 2) or b"").decode("ascii", "replace")
        profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
        link.read(profile, 3)
        end = dt.datetime.fromisoformat(out["clock"])
        start = end - dt.timedelta(days=cfg.get("days", 1))
        reply = GXReplyData()
        link.block(client.readRowsByRange(profile, GXDateTime(start), GXDateTime(end)), reply)
        client.updateValue(profile, 2, reply.value)
        out["profile"] = [[row[0].value.astimezone(dt.UTC).isoformat(), int(row[1]), int(row[2])]
                          for row in profile.buffer]
        if auth != Authentication.NONE:
            relay = GXDLMSDisconnectControl("0.0.96.3.10.255")
            states = []
            for command in (relay.remoteDisconnect, relay.remoteReconnect):
                link.block(command(client), GXReplyData())  # built just before sending: invocation counters
                link.read(relay, 2)
                link.read(relay, 3)
                states.append([bool(relay.outputState), int(relay.controlState)])
            out["relay"] = states
        link.block(client.releaseRequest(), GXReplyData())
    print(json.dumps(out))  # the last line of stdout (Gurux prints its own lines before)


if __name__ == "__main__":
    main()
