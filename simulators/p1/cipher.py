"""Encrypting a P1 telegram as Luxembourg and Austrian meters send it: a DLMS general-global-ciphering
APDU (0xDB, system title, length, security control 0x30, invocation counter, AES-128-GCM ciphertext,
a 12-byte tag). Written with `cryptography` directly, apart from the driver's decryption
(dlms-cosem), so the test checks one against the other."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SECURITY_CONTROL = 0x30  # authenticated and encrypted, security suite 0


def encrypt(telegram: bytes, key: bytes, auth_key: bytes, system_title: bytes, counter: int) -> bytes:
    iv = system_title + counter.to_bytes(4, "big")
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    enc.authenticate_additional_data(bytes([SECURITY_CONTROL]) + auth_key)
    body = enc.update(telegram) + enc.finalize() + enc.tag[:12]
    content = bytes([SECURITY_CONTROL]) + counter.to_bytes(4, "big") + body
    return bytes([0xDB, len(system_title)]) + system_title + b"\x82" + len(content).to_bytes(2, "big") + content


__all__ = ["encrypt"]
