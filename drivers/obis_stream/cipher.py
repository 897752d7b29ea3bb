"""Encrypted P1 telegrams (Luxembourg Smarty, Austrian meters): each DSMR telegram travels as a
DLMS general-global-ciphering APDU (tag 0xDB), AES-128-GCM with a 12-byte tag, keyed per meter by
the grid operator. The key comes from the environment (the port names the variable), never from
the configuration file. Decryption is dlms-cosem's (already the DLMS driver's codec), as
dsmr-parser does it; the plain telegram then goes through the P1 decoder like any other."""

from __future__ import annotations

from dlms_cosem.exceptions import DecryptionError
from dlms_cosem.protocol.xdlms import GeneralGlobalCipher

from drivers.obis_stream.p1 import Chunk, P1Error

TAG = GeneralGlobalCipher.TAG  # 0xDB
#: An APDU is a telegram plus 30 bytes of header and tag; DSMR telegrams stay under 8 kB.
MAX_APDU = 8192 + 64


class CipherFramer:
    """Cuts a byte stream into general-global-ciphering APDUs by their BER length."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Chunk]:
        self._buf += data
        buf = self._buf
        out: list[Chunk] = []
        while buf:
            start = buf.find(bytes([TAG]))
            if start < 0:
                out.append(Chunk(bytes(buf), "garbage"))
                buf.clear()
                break
            if start > 0:
                out.append(Chunk(bytes(buf[:start]), "garbage"))
                del buf[:start]
            size = _size(buf)
            if size is None:
                break
            if size <= 0 or size > MAX_APDU:
                out.append(Chunk(bytes(buf[:1]), "garbage"))  # not a header: step past the 0xDB
                del buf[:1]
                continue
            if len(buf) < size:
                break
            out.append(Chunk(bytes(buf[:size])))
            del buf[:size]
        return out


def _size(buf: bytearray) -> int | None:
    """The whole APDU's length from its header (None: header incomplete; 0: not a header)."""
    if len(buf) < 2:
        return None
    title = buf[1]
    if title != 8:
        return 0
    at = 2 + title
    if len(buf) < at + 1:
        return None
    first = buf[at]
    if first < 0x80:
        return at + 1 + first
    width = first & 0x7F
    if width not in (1, 2) or len(buf) < at + 1 + width:
        return None if width in (1, 2) else 0
    return at + 1 + width + int.from_bytes(buf[at + 1:at + 1 + width], "big")


def decrypt(apdu: bytes, key: bytes, auth_key: bytes) -> bytes:
    """The plain telegram; P1Error("decrypt") when the key does not fit or the APDU is broken."""
    try:
        cipher = GeneralGlobalCipher.from_bytes(apdu)
        plain = bytes(cipher.to_plain_apdu(key, auth_key))
    except DecryptionError:
        raise P1Error("decrypt", "authentication failed: wrong key, or the telegram was altered") from None
    except NotImplementedError as exc:  # dlms-cosem: a security control byte it does not handle
        raise P1Error("decrypt", f"unsupported security: {exc}") from None
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise P1Error("decrypt", f"not a ciphered telegram: {exc}") from None
    if not plain.startswith(b"/"):
        raise P1Error("decrypt", "decrypted to something that is not a telegram (wrong key?)")
    return plain


__all__ = ["CipherFramer", "decrypt"]
