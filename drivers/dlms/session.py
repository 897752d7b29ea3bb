"""One DLMS/COSEM association over a link: AARQ/AARE (lowest, low, HLS-GMAC), security suite 0
global ciphering, GET (normal and with block transfer, with selective access), release.

dlms-cosem's sans-io `DlmsConnection` builds and checks the APDUs and does the cryptography;
this module does the I/O (awaiting the link) and turns every way a meter can fail us into one of
the driver's typed errors, keeping the bytes received: a refused association, an access result,
a frame that cannot be parsed or decrypted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from dlms_cosem import cosem, dlms_data, enumerations, exceptions
from dlms_cosem import state as dlms_state
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.protocol import acse, xdlms

from drivers.dlms.errors import AccessError, AssociationRefused, FrameError
from drivers.dlms.links import Link

log = logging.getLogger(__name__)
# dlms-cosem 21.3.2 logs every deciphered APDU at WARNING ("apdu_bytes: ...") and every APDU sent
# at INFO: the plaintext of ciphered traffic must not reach the gateway's logs.
logging.getLogger("dlms_cosem").setLevel(logging.ERROR)

AUTH = {"lowest": enumerations.AuthenticationMechanism.NONE, "low": enumerations.AuthenticationMechanism.LLS,
        "hls_gmac": enumerations.AuthenticationMechanism.HLS_GMAC}
#: Blocks of one GET a session follows before it calls the answer runaway.
MAX_BLOCKS = 10_000
_ASSOCIATION_LN = cosem.Obis(0, 0, 40, 0, 0)
_AUTH_FAILED = {enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED,
                enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED,
                enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED,
                enumerations.AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_REQUIRED}


@dataclass(frozen=True, slots=True)
class Security:
    """How a client associates: authentication, its secret(s), and the invocation counter to start at.
    repr hides the secrets (they reach no log line)."""

    authentication: str = "lowest"  # lowest | low | hls_gmac
    password: bytes | None = None
    authentication_key: bytes | None = None
    encryption_key: bytes | None = None
    system_title: bytes | None = None

    def __repr__(self) -> str:
        return f"Security({self.authentication}, ciphered={self.ciphered})"

    @property
    def ciphered(self) -> bool:
        return self.encryption_key is not None


class Session:
    """One association: `associate()`, then `get()`s, then `release()`; the link is the caller's."""

    def __init__(self, link: Link, security: Security, *, meter_id: str | None, where: str,
                 invocation_counter: int = 0, max_pdu: int = 0xFFFF) -> None:
        self.link = link
        self.meter_id = meter_id
        self.where = where
        self.security = security
        s = security
        self.conn = DlmsConnection(
            client_system_title=s.system_title, authentication_method=AUTH[s.authentication],
            password=s.password, global_encryption_key=s.encryption_key,
            global_authentication_key=s.authentication_key if s.ciphered else None,
            client_invocation_counter=invocation_counter, max_pdu_size=max_pdu)
        #: The last APDU received, for diagnostics and dead letters.
        self.last_raw = b""

    @property
    def invocation_counter(self) -> int:
        """The next invocation counter this client would use (persist it after the session)."""
        return int(self.conn.client_invocation_counter)

    @property
    def meter_system_title(self) -> bytes | None:
        return self.conn.meter_system_title  # type: ignore[no-any-return]

    async def associate(self) -> None:
        """AARQ -> AARE, and the HLS-GMAC pass if the meter asks it; AssociationRefused, FrameError."""
        aare = await self._request(self.conn.get_aarq(), refusal=True)
        if isinstance(aare, xdlms.ExceptionResponse):
            raise AssociationRefused(self.meter_id, self.where, f"exception response {aare.state_error.name} "
                                     f"{aare.service_error.name}")
        if not isinstance(aare, acse.ApplicationAssociationResponse):
            raise FrameError(self.meter_id, self.where, f"expected an AARE, got {type(aare).__name__}", self.last_raw)
        if aare.result is not enumerations.AssociationResult.ACCEPTED:
            said = _refusal(aare)
            # A meter that cannot decipher or authenticate our AARQ often gives no reason (Gurux,
            # IDIS meters: "rejected permanent, no reason given"): with a secret in the AARQ, that is
            # a key or password the meter does not share. What it said is kept on the error.
            secret = self.security.ciphered or self.security.authentication != "lowest"
            vague = aare.result_source_diagnostics in (enumerations.AcseServiceUserDiagnostics.NULL,
                                                       enumerations.AcseServiceUserDiagnostics.NO_REASON_GIVEN)
            error = AssociationRefused(self.meter_id, self.where, "authentication failure" if secret and vague else said)
            error.said = said
            raise error
        if self.conn.state.current_state == dlms_state.SHOULD_SEND_HLS_SEVER_CHALLENGE_RESULT:
            await self._hls()

    async def _hls(self) -> None:
        try:
            reply = self.conn.get_hls_reply()
        except (exceptions.LocalDlmsProtocolError, ValueError) as exc:
            raise AssociationRefused(self.meter_id, self.where, f"HLS: {exc}") from None
        method = cosem.CosemMethod(enumerations.CosemInterface.ASSOCIATION_LN, _ASSOCIATION_LN, 1)
        answer = await self._request(xdlms.ActionRequestNormal(
            cosem_method=method, data=dlms_data.OctetStringData(reply).to_bytes()), refusal=True)
        if self.conn.state.current_state != dlms_state.READY:
            status = getattr(answer, "status", None)
            refused = status in (None, enumerations.ActionResultStatus.SUCCESS,
                                 enumerations.ActionResultStatus.READ_WRITE_DENIED)
            why = "authentication failure" if refused else f"HLS answered {_name(status)}"
            raise AssociationRefused(self.meter_id, self.where, why)

    async def get(self, interface: int, code: bytes, attribute: int, access: RangeDescriptor | None = None) -> bytes:
        """One attribute's Data bytes, following blocks; AccessError, FrameError, OSError, TimeoutError."""
        target = cosem.CosemAttribute(enumerations.CosemInterface(interface), cosem.Obis.from_bytes(code), attribute)
        answer = await self._request(xdlms.GetRequestNormal(cosem_attribute=target, access_selection=access))
        data = bytearray()
        for _ in range(MAX_BLOCKS):
            if isinstance(answer, xdlms.GetResponseNormal):
                return bytes(answer.data)
            if isinstance(answer, xdlms.GetResponseLastBlock):
                return bytes(data + answer.data)
            if isinstance(answer, xdlms.GetResponseWithBlock):
                data += answer.data
                answer = await self._request(xdlms.GetRequestNext(
                    invoke_id_and_priority=answer.invoke_id_and_priority, block_number=answer.block_number))
                continue
            what = f"GET {interface}/{cosem.Obis.from_bytes(code).to_string()}/{attribute}"
            if isinstance(answer, (xdlms.GetResponseNormalWithError, xdlms.GetResponseLastBlockWithError)):
                raise AccessError(self.meter_id, self.where, what, _name(answer.error))
            if isinstance(answer, xdlms.ExceptionResponse):
                raise AccessError(self.meter_id, self.where, what,
                                  f"exception {answer.state_error.name} {answer.service_error.name}")
            raise FrameError(self.meter_id, self.where, f"{what}: unexpected {type(answer).__name__}", self.last_raw)
        raise FrameError(self.meter_id, self.where, f"GET answer longer than {MAX_BLOCKS} blocks", self.last_raw)

    async def release(self) -> None:
        """RLRQ -> RLRE; errors are not the caller's concern (the link closes next)."""
        try:
            await self._request(self.conn.get_rlrq())
        except (FrameError, OSError, TimeoutError, AccessError):
            pass

    async def _request(self, apdu: Any, *, refusal: bool = False) -> Any:
        try:
            out = self.conn.send(apdu)
        except (exceptions.LocalDlmsProtocolError, ValueError) as exc:
            raise FrameError(self.meter_id, self.where, f"cannot send {type(apdu).__name__}: {exc}") from None
        raw = await self.link.exchange(out)
        self.last_raw = raw
        self.conn.receive_data(raw)
        try:
            return self.conn.next_event()
        except exceptions.CryptographyError:
            self.conn.clear_buffer()
            if refusal:  # the meter's answer does not authenticate under our key
                raise AssociationRefused(self.meter_id, self.where, "authentication failure") from None
            raise FrameError(self.meter_id, self.where, "ciphered APDU fails authentication", raw) from None
        except Exception as exc:  # the parser's errors are untyped; this is untrusted input
            self.conn.clear_buffer()
            raise FrameError(self.meter_id, self.where, f"APDU not understood: {type(exc).__name__}: {exc}",
                             raw) from None


def _refusal(aare: acse.ApplicationAssociationResponse) -> str:
    diag = aare.result_source_diagnostics
    if diag in _AUTH_FAILED:
        return "authentication failure"
    extra = ""
    info = aare.user_information.content if aare.user_information else None
    if isinstance(info, xdlms.ConfirmedServiceError):
        extra = f" ({info.error!r})"
    return f"{_name(aare.result)}, {_name(diag)}{extra}"


def _name(value: Any) -> str:
    name = getattr(value, "name", None)
    return str(name).lower().replace("_", " ") if name else str(value)


__all__ = ["AUTH", "Security", "Session"]
