"""One client connection to a simulated meter: the association (AARQ/AARE, lowest / LLS / HLS-GMAC, ciphered
context) and the xDLMS services GET (normal, with list, with block transfer), SET and ACTION.

`handle` takes one APDU (the wrapper's payload) and returns the APDU to answer, or None for no answer.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from dlms_cosem import enumerations as enums
from dlms_cosem.enumerations import AcseServiceUserDiagnostics as Diag
from dlms_cosem.protocol import acse, xdlms
from dlms_cosem.protocol.xdlms.conformance import Conformance
from dlms_cosem.security import SecurityControlField

from simulators.dlms import axdr, cipher
from simulators.dlms.axdr import Decoded
from simulators.dlms.catalogue import ASSOCIATION_LN, Key
from simulators.dlms.meter import MANAGEMENT_CLIENT, PUBLIC_CLIENT, MeterState
from simulators.dlms.objects import OBJECT_UNDEFINED, READ_WRITE_DENIED, TYPE_UNMATCHED, AccessError, CosemObject

SERVER_MAX_PDU = 1024
SC_CIPHERED = SecurityControlField(0, authenticated=True, encrypted=True)
#: What the meter offers: get, set, action, selective access, block transfer with GET, multiple references.
OFFERED = int.from_bytes(Conformance(
    general_protection=True, general_block_transfer=False, delta_value_encoding=False,
    attribute_0_supported_with_set=False, priority_management_supported=True,
    attribute_0_supported_with_get=False, block_transfer_with_get_or_read=True,
    block_transfer_with_set_or_write=False, block_transfer_with_action=False, multiple_references=True,
    data_notification=True, access=False, get=True, set=True, selective_access=True, event_notification=False,
    action=True).to_bytes()[1:], "big")


class Refused(Exception):
    def __init__(self, diag: Diag, why: str) -> None:
        super().__init__(why)
        self.diag = diag


def exception_response(state_error: int, service_error: int) -> bytes:
    return bytes([0xD8, state_error, service_error])


@dataclass
class Session:
    meter: MeterState
    objects: dict[Key, CosemObject]
    client_sap: int = 0
    state: str = "idle"  # idle | hls | associated
    ciphered: bool = False
    client_title: bytes = b""
    client_max_pdu: int = 0xFFFF
    challenge_ctos: bytes = b""
    challenge_stoc: bytes = b""
    requests: int = 0
    blocks: list[bytes] = field(default_factory=list)
    block_number: int = 0
    log: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    @property
    def keys(self) -> cipher.Keys:
        s = self.meter.spec.secrets
        return cipher.Keys(s.encryption_key, s.authentication_key)

    # -- entry -----------------------------------------------------------------------------------
    def handle(self, apdu: bytes, client_sap: int) -> bytes | None:
        if not apdu:
            return None
        tag = apdu[0]
        if tag == 0x60:
            return self._associate(apdu, client_sap)
        if tag == 0x62:
            self.state = "idle"
            return b"\x63\x03\x80\x01\x00"  # RLRE, reason normal
        if self.state == "idle":
            return exception_response(1, 1)  # service not allowed: no association
        if tag == cipher.GENERAL_GLO or tag in cipher.PLAIN_OF:
            return self._ciphered(apdu)
        if self.ciphered:
            return exception_response(1, 1)  # a ciphered context takes ciphered APDUs only
        return self._service(apdu)

    def _ciphered(self, apdu: bytes) -> bytes:
        try:
            env = cipher.open_envelope(apdu)
            if not self.ciphered:
                raise cipher.CipherError(cipher.DECIPHERING_ERROR, "ciphered APDU in a plain association")
            if env.system_title is not None and env.system_title != self.client_title:
                raise cipher.CipherError(cipher.DECIPHERING_ERROR, "system title differs from the AARQ's")
            self._check_ic(env.invocation_counter)
            plain = cipher.decrypt(env, self.client_title, self.keys)
            self.meter.client_ic_seen = env.invocation_counter  # only an APDU that verified moves it
        except cipher.CipherError as exc:
            self.log.append(str(exc))
            return exception_response(1, exc.service_error)
        answer = self._service(plain)
        return cipher.seal(answer, env.tag, self.meter.spec.system_title, self.meter.next_server_ic(), self.keys)

    def _check_ic(self, ic: int) -> None:
        if ic <= self.meter.client_ic_seen:
            raise cipher.CipherError(cipher.INVOCATION_COUNTER_ERROR,
                                     f"invocation counter {ic} not above {self.meter.client_ic_seen}")

    # -- association -----------------------------------------------------------------------------
    def _associate(self, raw: bytes, client_sap: int) -> bytes:
        self.state, self.ciphered, self.blocks = "idle", False, []
        try:
            aarq = acse.ApplicationAssociationRequest.from_bytes(raw)
        except Exception as exc:  # dlms-cosem raises ValueError, KeyError, IndexError on bad BER
            self.log.append(f"AARQ not understood: {exc!r}")
            return self._aare_reject(Diag.NO_REASON_GIVEN, ciphered=False)
        try:
            initiate = self._check_aarq(aarq, client_sap)
        except Refused as exc:
            self.log.append(str(exc))
            return self._aare_reject(exc.diag, ciphered=aarq.ciphered)
        proposed = int.from_bytes(initiate.proposed_conformance.to_bytes()[1:], "big")
        conformance = Conformance.from_bytes(b"\x00" + (proposed & OFFERED).to_bytes(3, "big"))
        self.client_max_pdu = initiate.client_max_receive_pdu_size or 0xFFFF
        response = xdlms.InitiateResponse(negotiated_conformance=conformance, server_max_receive_pdu_size=SERVER_MAX_PDU)
        content: object = response
        title = self.meter.spec.system_title
        if aarq.ciphered:
            ic = self.meter.next_server_ic()
            sealed = cipher.encrypt(response.to_bytes(), title, ic, self.keys)
            content = xdlms.GlobalCipherInitiateResponse(security_control=SC_CIPHERED, invocation_counter=ic,
                                                         ciphered_text=sealed[5:])
        mech = aarq.authentication
        hls = mech == enums.AuthenticationMechanism.HLS_GMAC
        if hls:
            self.challenge_stoc = os.urandom(16)
        self.client_sap, self.ciphered = client_sap, bool(aarq.ciphered)
        self.state = "hls" if hls else "associated"
        aare = acse.ApplicationAssociationResponse(
            result=enums.AssociationResult.ACCEPTED, result_source_diagnostics=Diag.NULL, ciphered=self.ciphered,
            authentication=mech if mech in (enums.AuthenticationMechanism.LLS, enums.AuthenticationMechanism.HLS_GMAC)
            else None, system_title=title if (self.ciphered or hls) else None,
            authentication_value=self.challenge_stoc if hls else None,
            user_information=acse.UserInformation(content=content))
        return bytes(aare.to_bytes())

    def _check_aarq(self, aarq: acse.ApplicationAssociationRequest, sap: int) -> xdlms.InitiateRequest:
        meter, secrets = self.meter, self.meter.spec.secrets
        if "refuse" in meter.faults:
            raise Refused(Diag.NO_REASON_GIVEN, "fault: association refused")
        mech = aarq.authentication or enums.AuthenticationMechanism.NONE
        if sap == PUBLIC_CLIENT:
            if mech != enums.AuthenticationMechanism.NONE or aarq.ciphered:
                raise Refused(Diag.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED, "public client: lowest only")
        elif sap == MANAGEMENT_CLIENT:
            wanted = enums.AuthenticationMechanism.HLS_GMAC if secrets.cipher else enums.AuthenticationMechanism.LLS
            if mech == enums.AuthenticationMechanism.NONE:
                raise Refused(Diag.AUTHENTICATION_REQUIRED, "management client: authentication required")
            if mech != wanted or bool(aarq.ciphered) != secrets.cipher:
                raise Refused(Diag.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED, f"management client: {wanted.name}")
            if mech == enums.AuthenticationMechanism.LLS and aarq.authentication_value != secrets.password:
                raise Refused(Diag.AUTHENTICATION_FAILED, "LLS: wrong password")
        else:
            raise Refused(Diag.CALLING_AP_TITLE_NOT_RECOGNIZED, f"client SAP {sap} unknown")
        self.challenge_ctos = bytes(aarq.authentication_value or b"")
        info = aarq.user_information.content if aarq.user_information else None
        if isinstance(info, xdlms.GlobalCipherInitiateRequest):
            title = bytes(aarq.system_title or b"")
            if len(title) != 8:
                raise Refused(Diag.CALLING_AP_TITLE_NOT_RECOGNIZED, "ciphered AARQ without an 8-octet system title")
            self.client_title = title
            env = cipher.Envelope(0x21, None, info.security_control.to_bytes()[0], info.invocation_counter,
                                  info.ciphered_text)
            try:
                self._check_ic(env.invocation_counter)
                plain = cipher.decrypt(env, title, self.keys)
                self.meter.client_ic_seen = env.invocation_counter
                return xdlms.InitiateRequest.from_bytes(plain)
            except cipher.CipherError as exc:
                raise Refused(Diag.AUTHENTICATION_FAILED, f"ciphered InitiateRequest: {exc}") from None
        if isinstance(info, xdlms.InitiateRequest):
            return info
        raise Refused(Diag.NO_REASON_GIVEN, "AARQ without an InitiateRequest")

    def _aare_reject(self, diag: Diag, ciphered: bool) -> bytes:
        self.state = "idle"
        return bytes(acse.ApplicationAssociationResponse(
            result=enums.AssociationResult.REJECTED_PERMANENT, result_source_diagnostics=diag,
            ciphered=ciphered).to_bytes())

    # -- services ----------------------------------------------------------------------------------
    def _service(self, apdu: bytes) -> bytes:
        self.requests += 1
        try:
            tag, kind, iid = apdu[0], apdu[1], apdu[2]
        except IndexError:
            return exception_response(2, 2)
        try:
            if tag == 0xC0 and kind == 1:
                return self._get_normal(apdu, iid)
            if tag == 0xC0 and kind == 2:
                return self._get_next(apdu, iid)
            if tag == 0xC0 and kind == 3:
                return self._get_list(apdu, iid)
            if tag == 0xC1 and kind == 1:
                return self._set(apdu, iid)
            if tag == 0xC3 and kind == 1:
                return self._action(apdu, iid)
        except (IndexError, axdr.AxdrError) as exc:
            self.log.append(f"request not understood: {exc}")
            return exception_response(2, 3)
        return exception_response(2, 2)  # service unknown / not supported

    def _descriptor(self, apdu: bytes, pos: int) -> tuple[int, bytes, int, int]:
        return int.from_bytes(apdu[pos:pos + 2], "big"), apdu[pos + 2:pos + 8], apdu[pos + 8], pos + 9

    def _selection(self, apdu: bytes, pos: int) -> tuple[int, Decoded | None, int]:
        if apdu[pos] == 0:
            return 0, None, pos + 1
        selector = apdu[pos + 1]
        value, pos = axdr.decode(apdu, pos + 2)
        return selector, value, pos

    def _read(self, class_id: int, ln: bytes, attr: int, selector: int, sel: Decoded | None) -> bytes:
        obj = self.objects.get((class_id, ln))
        if obj is None:
            raise AccessError(OBJECT_UNDEFINED, f"no object {class_id}/{ln.hex()}")
        if self.state != "associated":
            raise AccessError(READ_WRITE_DENIED, "HLS not completed")
        return obj.get(attr, sel, selector)

    def _get_normal(self, apdu: bytes, iid: int) -> bytes:
        class_id, ln, attr, pos = self._descriptor(apdu, 3)
        selector, sel, _ = self._selection(apdu, pos)
        try:
            data = self._read(class_id, ln, attr, selector, sel)
        except AccessError as exc:
            return bytes([0xC4, 1, iid, 1, exc.code])
        whole = bytes([0xC4, 1, iid, 0]) + data
        limit = min(self.client_max_pdu, 0xFFFF) - (40 if self.ciphered else 0)
        if len(whole) <= limit:
            return whole
        size = max(16, limit - 16)
        self.blocks = [data[i:i + size] for i in range(0, len(data), size)]
        self.block_number = 0
        return self._next_block(iid)

    def _next_block(self, iid: int) -> bytes:
        chunk = self.blocks.pop(0)
        self.block_number += 1
        last = 0 if self.blocks else 1
        return (bytes([0xC4, 2, iid, last]) + self.block_number.to_bytes(4, "big") + b"\x00"
                + axdr.length(len(chunk)) + chunk)

    def _get_next(self, apdu: bytes, iid: int) -> bytes:
        acked = int.from_bytes(apdu[3:7], "big")
        if not self.blocks or acked != self.block_number:
            self.blocks = []
            return bytes([0xC4, 2, iid, 1]) + acked.to_bytes(4, "big") + bytes([1, 16])  # no-long-get-in-progress
        return self._next_block(iid)

    def _get_list(self, apdu: bytes, iid: int) -> bytes:
        count, pos = axdr._length_at(apdu, 3)
        results = []
        for _ in range(count):
            class_id, ln, attr, pos = self._descriptor(apdu, pos)
            selector, sel, pos = self._selection(apdu, pos)
            try:
                results.append(b"\x00" + self._read(class_id, ln, attr, selector, sel))
            except AccessError as exc:
                results.append(bytes([1, exc.code]))
        return bytes([0xC4, 3, iid]) + axdr.length(count) + b"".join(results)

    def _set(self, apdu: bytes, iid: int) -> bytes:
        class_id, ln, attr, pos = self._descriptor(apdu, 3)
        _, _, pos = self._selection(apdu, pos)
        value, _ = axdr.decode(apdu, pos)
        try:
            obj = self._writable(class_id, ln)
            obj.set(attr, value)
            code = 0
        except AccessError as exc:
            code = exc.code
        return bytes([0xC5, 1, iid, code])

    def _writable(self, class_id: int, ln: bytes) -> CosemObject:
        obj = self.objects.get((class_id, ln))
        if obj is None:
            raise AccessError(OBJECT_UNDEFINED, f"no object {class_id}/{ln.hex()}")
        if self.state != "associated" or self.client_sap == PUBLIC_CLIENT:
            raise AccessError(READ_WRITE_DENIED, "the public client reads only")
        return obj

    def _action(self, apdu: bytes, iid: int) -> bytes:
        class_id, ln, method, pos = self._descriptor(apdu, 3)
        param = axdr.decode(apdu, pos + 1)[0] if apdu[pos] else None
        result: bytes | None
        try:
            if (class_id, ln, method) == (15, ASSOCIATION_LN, 1) and self.state == "hls":
                result = self._reply_to_hls(param)
            else:
                result = self._writable(class_id, ln).action(method, param)
        except AccessError as exc:
            return bytes([0xC7, 1, iid, exc.code, 0])
        if result is None:
            return bytes([0xC7, 1, iid, 0, 0])
        return bytes([0xC7, 1, iid, 0, 1, 0]) + result

    def _reply_to_hls(self, param: Decoded | None) -> bytes:
        """HLS pass 3 and 4: check the client's f(StoC), answer f(CtoS)."""
        reply = param.value if param is not None else None
        if not isinstance(reply, bytes) or len(reply) != 17:
            self.state = "idle"
            raise AccessError(TYPE_UNMATCHED, "reply_to_HLS: want SC, IC and a 12-octet GMAC")
        ic = int.from_bytes(reply[1:5], "big")
        if cipher.gmac(self.client_title, ic, self.keys, self.challenge_stoc) != reply:
            self.state = "idle"
            self.log.append("HLS: the client's GMAC does not verify (wrong key)")
            raise AccessError(READ_WRITE_DENIED, "HLS authentication failed")
        self.state = "associated"
        own = cipher.gmac(self.meter.spec.system_title, self.meter.next_server_ic(), self.keys, self.challenge_ctos)
        return axdr.octet_string(own)

