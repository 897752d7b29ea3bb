"""Security suite 0 (AES-GCM-128) of the simulator: the ciphered APDU envelopes and HLS-GMAC.

The AES-GCM and GMAC computations are dlms-cosem's (`dlms_cosem.security`, over `cryptography`); the envelopes
(general-glo-ciphering, and the service-specific glo-get/set/action a Gurux client sends) are read and written
here, with lengths in full A-XDR form.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlms_cosem import security
from dlms_cosem.exceptions import DecryptionError

from simulators.dlms import axdr

GENERAL_GLO = 0xDB
#: plain service tag -> its glo-ciphered (service-specific, global key) tag, Green Book table of APDU tags
GLO_OF = {0xC0: 0xC8, 0xC1: 0xC9, 0xC3: 0xCB, 0xC4: 0xCC, 0xC5: 0xCD, 0xC7: 0xCF}
PLAIN_OF = {v: k for k, v in GLO_OF.items()}
SC_ENCRYPTED_AUTHENTICATED = 0x30
SC_AUTHENTICATED = 0x10


class CipherError(Exception):
    """A ciphered APDU the meter cannot accept: `service_error` is the Exception-Response code to send."""

    def __init__(self, service_error: int, why: str) -> None:
        super().__init__(why)
        self.service_error = service_error


DECIPHERING_ERROR = 5
INVOCATION_COUNTER_ERROR = 6


@dataclass(frozen=True, slots=True)
class Keys:
    encryption: bytes
    authentication: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A ciphered APDU taken apart: its kind (GENERAL_GLO or a glo tag), sender system title if carried,
    security control, invocation counter and the ciphertext with its 12-octet tag."""

    tag: int
    system_title: bytes | None
    security_control: int
    invocation_counter: int
    ciphertext: bytes


def _octets_at(data: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = axdr._length_at(data, pos)
    if pos + n > len(data):
        raise CipherError(DECIPHERING_ERROR, f"ciphered APDU: {n} octets announced at offset {pos}, {len(data) - pos} left")
    return data[pos:pos + n], pos + n


def open_envelope(apdu: bytes) -> Envelope:
    try:
        tag, pos, title = apdu[0], 1, None
        if tag == GENERAL_GLO:
            title, pos = _octets_at(apdu, pos)
        content, _ = _octets_at(apdu, pos)
    except (IndexError, axdr.AxdrError) as exc:
        raise CipherError(DECIPHERING_ERROR, f"ciphered APDU {apdu[:16].hex()}: {exc}") from None
    if len(content) < 5 + 12:
        raise CipherError(DECIPHERING_ERROR, f"ciphered content of {len(content)} octets is too short")
    return Envelope(tag, title, content[0], int.from_bytes(content[1:5], "big"), content[5:])


def decrypt(env: Envelope, system_title: bytes, keys: Keys) -> bytes:
    if env.security_control != SC_ENCRYPTED_AUTHENTICATED:
        raise CipherError(DECIPHERING_ERROR, f"security control 0x{env.security_control:02x}: the meter wants 0x30")
    try:
        plain: bytes = security.decrypt(security.SecurityControlField.from_bytes(bytes([env.security_control])),
                                        system_title=system_title, invocation_counter=env.invocation_counter,
                                        key=keys.encryption, auth_key=keys.authentication, cipher_text=env.ciphertext)
    except (DecryptionError, ValueError) as exc:
        raise CipherError(DECIPHERING_ERROR, f"authentication tag does not verify: {exc}") from None
    return bytes(plain)


def encrypt(plain: bytes, system_title: bytes, ic: int, keys: Keys) -> bytes:
    """Ciphered content: SC, IC, ciphertext and tag."""
    sc = security.SecurityControlField(0, authenticated=True, encrypted=True)
    body: bytes = security.encrypt(sc, system_title=system_title, invocation_counter=ic, key=keys.encryption,
                                   auth_key=keys.authentication, plain_text=plain)
    return bytes([SC_ENCRYPTED_AUTHENTICATED]) + ic.to_bytes(4, "big") + body


def seal(plain: bytes, kind: int, system_title: bytes, ic: int, keys: Keys) -> bytes:
    """Cipher a response the way its request came: general-glo-ciphering (with the meter's system title) or
    the glo tag of the service."""
    if kind != GENERAL_GLO and plain[0] not in GLO_OF:
        return plain  # an exception-response has no glo form: it goes plain
    content = encrypt(plain, system_title, ic, keys)
    if kind == GENERAL_GLO:
        return bytes([GENERAL_GLO]) + axdr.length(len(system_title)) + system_title + axdr.length(len(content)) + content
    return bytes([GLO_OF[plain[0]]]) + axdr.length(len(content)) + content


def gmac(system_title: bytes, ic: int, keys: Keys, challenge: bytes) -> bytes:
    """HLS-GMAC f(challenge) = SC || IC || GMAC(SC || AK || challenge), 17 octets."""
    sc = security.SecurityControlField(0, authenticated=True, encrypted=False)
    tag: bytes = security.gmac(sc, system_title=system_title, invocation_counter=ic, key=keys.encryption,
                               auth_key=keys.authentication, challenge=challenge)
    return bytes([SC_AUTHENTICATED]) + ic.to_bytes(4, "big") + tag
