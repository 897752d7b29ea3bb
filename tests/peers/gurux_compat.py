"""What gurux-dlms 1.0.203's Python server lacks, supplied; imported only by gurux_dlms_server.py (a
separate process: gurux-dlms is GPL-2.0).

Its server is an incomplete port of Gurux's Java server: it calls methods that do not exist
(GXServerReply.setReply, GXDLMSServer.notifyRead / setTransaction / getTransaction /
notifyConnected, GXDLMSSettings.setConnected, GXDLMSLongTransaction.setData,
GXDLMSAssociationLogicalName.getAssociationStatus, settings.gbtWndowSize), iterates one
ValueEventArgs as a list, and encodes a few APDUs wrongly (an AARE with a system title or a
challenge, the RLRE). Each fix below names the gap it fills; everything else (APDU parsing and
encoding, AES-GCM, GMAC, block transfer) is Gurux's own code. `patch_gurux()` must run once before
a server is made.
"""

from __future__ import annotations

import logging
from typing import Any

from gurux_dlms import GXByteBuffer
from gurux_dlms._GXAPDU import _GXAPDU
from gurux_dlms.enums import AccessMode, Authentication, InterfaceType, MethodAccessMode, Security
from gurux_dlms.GXCiphering import GXCiphering
from gurux_dlms.GXDLMSChipperingStream import GXDLMSChipperingStream
from gurux_dlms.GXDLMSLongTransaction import GXDLMSLongTransaction
from gurux_dlms.GXDLMSSettings import GXDLMSSettings
from gurux_dlms.GXSecure import GXSecure
from gurux_dlms.GXServerReply import GXServerReply
from gurux_dlms.objects import GXDLMSAssociationLogicalName
from gurux_dlms.objects.enums import AssociationStatus
from gurux_dlms.secure import GXDLMSSecureServer
from gurux_dlms.ValueEventArgs import ValueEventArgs

LOG = logging.getLogger("gurux-peer")


class Reply(GXServerReply):  # type: ignore[misc]
    """GXDLMSServer.handleRequest calls these; GXServerReply does not define them."""

    def setReply(self, value: Any) -> None:
        self.reply = value

    def getConnectionInfo(self) -> Any:
        return self.connectionInfo

    def setCount(self, value: int) -> None:
        self.count = value

    def getCount(self) -> int:
        return int(self.count)


class Association(GXDLMSAssociationLogicalName):  # type: ignore[misc]
    """Gurux's HLS check (method 1, reply_to_HLS_authentication) does int(bytes) and fails; this one
    checks the client's f(StoC) with Gurux's GMAC (GXSecure.secure) and answers f(CtoS) with it."""

    def getAssociationStatus(self) -> Any:  # called by the method handler after method 1
        return self.associationStatus

    def invoke(self, settings: Any, e: Any) -> Any:
        if e.index != 1 or settings.authentication != Authentication.HIGH_GMAC:
            return super().invoke(settings, e)
        reply = bytes(e.parameters)  # SC | IC (4) | GMAC tag (12)
        ic = int.from_bytes(reply[1:5], "big")
        expected = GXSecure.secure(settings, settings.cipher, ic, settings.stoCChallenge, settings.sourceSystemTitle)
        if bytes(expected) != reply:
            LOG.warning("HLS: the client's reply to the challenge is wrong (wrong authentication key?)")
            self.associationStatus = AssociationStatus.NON_ASSOCIATED
            return None
        self.associationStatus = AssociationStatus.ASSOCIATED
        ic = settings.cipher.invocationCounter
        return GXSecure.secure(settings, settings.cipher, ic, settings.getCtoSChallenge(), settings.cipher.systemTitle)


class CompatServer(GXDLMSSecureServer):  # type: ignore[misc]
    """A GXDLMSSecureServer over the wrapper, logical-name referencing, with the missing methods and
    no-op hooks; subclasses decide who may associate and what methods do."""

    def __init__(self, system_title: bytes, block_cipher_key: bytes, authentication_key: bytes) -> None:
        super().__init__(True, InterfaceType.WRAPPER)
        # GXDLMSSecureServer sets `settings.ciphering`, the rest of the code reads `settings.cipher`.
        cipher = GXCiphering(system_title)
        cipher.blockCipherKey = bytearray(block_cipher_key)
        cipher.authenticationKey = bytearray(authentication_key)
        self.settings.cipher = cipher
        # The GET next-block handler reads this misspelt name.
        self.settings.gbtWndowSize = self.settings.gbtWindowSize
        #: The last request was answered with an error (e.g. its GCM tag was wrong).
        self.failed = False
        #: The result of the last AARE (0: accepted), for the caller to see.
        self.settings.aare_result = None

    def add_objects(self, objects: list[Any], association: Association) -> None:
        """Serve `objects` through `association`, then initialize(). (initialize() would append the
        whole collection to an empty object list as one object, which its type check refuses.)"""
        for obj in [*objects, association]:
            self.items.append(obj)
            association.objectList.append(obj)
        self.initialize()

    def reportError(self, command: Any, error: Any) -> Any:
        # The error reply is appended to (and ciphered with) the half-made reply: start it afresh.
        LOG.warning("Gurux failed on command %s, answering %s", command, error, exc_info=True)
        self.failed = True
        self.replyData.clear()
        return super().reportError(command, error)

    def handleReleaseRequest(self, data: Any) -> None:
        # Gurux's RLRE gives the user-information lengths one and seven bytes short (dlms-cosem
        # refuses it): the same content with the right lengths (IEC 62056-5-3 RLRE, reason normal).
        info = bytes(_GXAPDU.getUserInformation(self.settings, self.settings.cipher))
        user = bytes([0x04, len(info)]) + info
        body = bytes([0x80, 0x01, 0x00, 0xBE, len(user)]) + user
        self.replyData.set(bytes([0x63, len(body)]) + body)

    def notifyRead(self) -> None:  # called before every GET.Normal
        self.onPreRead()

    def onPreRead(self, args: Any = None) -> None:
        pass

    def onPostRead(self, args: Any = None) -> None:  # called with no argument by GET.Normal
        pass

    def setTransaction(self, value: Any) -> None:  # long GET replies (blocks)
        self.transaction = value

    def getTransaction(self) -> Any:
        return self.transaction

    def notifyConnected(self, connectionInfo: Any) -> None:  # after HLS pass 4
        self.onConnected(connectionInfo)

    def onPreGet(self, args: Any) -> None:
        pass

    def onPostGet(self, args: Any) -> None:
        pass

    def onFindObject(self, objectType: Any, sn: Any, ln: Any) -> Any:
        return None

    def onPreWrite(self, args: Any) -> None:
        pass

    def onPostWrite(self, args: Any) -> None:
        pass

    def onConnected(self, connectionInfo: Any) -> None:
        pass

    def onInvalidConnection(self, connectionInfo: Any) -> None:
        pass

    def onDisconnected(self, connectionInfo: Any) -> None:
        pass

    def onGetAttributeAccess(self, arg: Any) -> Any:
        return AccessMode.READ_WRITE

    def onGetMethodAccess(self, arg: Any) -> Any:
        return MethodAccessMode.ACCESS

    def onPreAction(self, args: Any) -> None:
        pass

    def onPostAction(self, args: Any) -> None:
        pass


def _aare(settings: Any, data: Any, result: Any, diagnostic: Any, cipher: Any, errorData: Any,
          encryptedData: Any) -> None:
    """Gurux's generateAARE calls setUInt8() without a value (every HLS or ciphered AARE fails) and
    gives the challenge one length short. The AARE of IEC 62056-5-3 with the same fields; the xDLMS
    initiate-response (ciphered when the AARQ was) is Gurux's, but its invocation counter is then
    counted (Gurux would reuse it for the next APDU, which a client refuses)."""
    ciphered = bool(cipher and cipher.isCiphered())
    settings.aare_result = int(result)
    out = bytearray([0xA1, 0x09, 0x06, 0x07, 0x60, 0x85, 0x74, 0x05, 0x08, 0x01, 0x03 if ciphered else 0x01])
    out += bytes([0xA2, 0x03, 0x02, 0x01, int(result)])
    out += bytes([0xA3, 0x05, 0xA1, 0x03, 0x02, 0x01, int(diagnostic)])
    if cipher and (settings.authentication == Authentication.HIGH_GMAC or ciphered):
        title = bytes(cipher.systemTitle)
        out += bytes([0xA4, len(title) + 2, 0x04, len(title)]) + title
    if settings.authentication > Authentication.LOW:
        challenge = bytes(settings.stoCChallenge)
        out += bytes([0x88, 0x02, 0x07, 0x80, 0x89, 0x07, 0x60, 0x85, 0x74, 0x05, 0x08, 0x02,
                      int(settings.authentication)])  # fmt: skip
        out += bytes([0xAA, len(challenge) + 2, 0x80, len(challenge)]) + challenge
    if result == 0 or not ciphered:
        info = bytes(errorData) if errorData else bytes(_GXAPDU.getUserInformation(settings, cipher))
        if ciphered and not errorData:
            cipher.invocationCounter += 1
        out += bytes([0xBE, len(info) + 2, 0x04, len(info)]) + info
    data.set(bytes([0x61, len(out)]) + bytes(out))


def _keep_rest(self: Any, value: Any) -> None:
    """GXDLMSLongTransaction.setData: keep what is left to send of a long GET reply."""
    self.data = GXByteBuffer()
    self.data.set(value, value.position, len(value) - value.position)


class TagError(ValueError):
    """A ciphered APDU whose GCM tag is not the one its keys give (wrong key, or tampered)."""


_flush = GXDLMSChipperingStream.flushFinalBlock
_stream_init = GXDLMSChipperingStream.__init__


def _stream_init_noting_tag(self: Any, forSecurity: Any, forEncrypt: Any, blockCipherKey: Any, forAad: Any,
                            iv: Any, forTag: Any) -> None:
    _stream_init(self, forSecurity, forEncrypt, blockCipherKey, forAad, iv, forTag)
    # A decrypting stream is the one built with the received 12-byte tag (the encrypting one: None).
    checks = bool(forTag) and forSecurity in (Security.AUTHENTICATION_ENCRYPTION, Security.AUTHENTICATION)
    self._check = (bytes(forTag), forSecurity, blockCipherKey, forAad, iv) if checks else None


def _flush_and_check(self: Any) -> Any:
    """GXDLMSChipperingStream.flushFinalBlock, then the received tag checked. Gurux decrypts in the
    stream's encrypt mode (right for GCM's counter mode) but its tag is then GHASH over the plain
    text, and it never compares: every ciphered request was taken, also one made with a wrong key.
    Gurux's own encryption of the recovered plain text (same key, IV, AAD) gives the tag to expect."""
    plain = _flush(self)
    if self._check is not None:
        received, security, key, aad, iv = self._check
        again = GXDLMSChipperingStream(security, True, key, aad, iv, None)
        again.write(plain)
        again.flushFinalBlock()
        if bytes(again.tag[:12]) != received:
            raise TagError("Decrypt failed. Invalid tag.")
    return plain


def patch_gurux() -> None:
    """Fill the gaps that are not methods of our own subclasses (idempotent)."""
    _GXAPDU.generateAARE = _aare
    GXDLMSChipperingStream.__init__ = _stream_init_noting_tag
    GXDLMSChipperingStream.flushFinalBlock = _flush_and_check
    if not hasattr(ValueEventArgs, "__iter__"):  # the method handler calls onPreAction(list(e))
        ValueEventArgs.__iter__ = lambda self: iter([self])
    if not hasattr(GXDLMSLongTransaction, "setData"):
        GXDLMSLongTransaction.setData = _keep_rest
    if not hasattr(GXDLMSSettings, "setConnected"):  # called after an HLS reply
        GXDLMSSettings.setConnected = lambda self, value: setattr(self, "connected", value)
