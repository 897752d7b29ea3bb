"""A DLMS meter's secrets (password, authentication key, encryption key), from the environment or a
key file only the service user can read; the invocation counter it starts from, kept in a small file.

Secrets are held in `Security` (drivers/dlms/session.py), whose repr hides them; no function here
logs or returns them in a message.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path

from drivers.dlms.session import Security


class SecretError(ValueError):
    """A key file or a secret that cannot be used: the message names the file/key, never the secret."""


def env_name(meter_id: str, what: str) -> str:
    return f"DLMS_{re.sub(r'[^A-Z0-9]', '_', meter_id.upper())}_{what.upper()}"


def key_file_problem(path: Path) -> str | None:
    """Why `path` may not hold keys (missing, not a file, readable or writable by group/others)."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_mode & 0o077:
        return (f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"keys must be readable only by the service user: chmod 600 {path}")
    return None


def load_key_file(path: Path | None) -> Mapping[str, Mapping[str, str]]:
    """Per-meter secrets of the key file ({} without one); SecretError naming the file."""
    if path is None:
        return {}
    problem = key_file_problem(path)
    if problem:
        raise SecretError(problem)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SecretError(f"{path}: not a readable TOML key file ({type(exc).__name__})") from None
    meters = doc.get("meters", {})
    if not isinstance(meters, dict) or not all(isinstance(v, dict) for v in meters.values()):
        raise SecretError(f"{path}: expected [meters.\"<meter id>\"] tables")
    return meters


def security_for(meter_id: str, authentication: str, ciphering: bool | None, system_title: bytes,
                 file: Mapping[str, Mapping[str, str]], env: Mapping[str, str]) -> Security:
    """The meter's Security; SecretError naming what is missing or malformed (not its value)."""
    entry = file.get(meter_id, {})

    def secret(what: str) -> str | None:
        value = env.get(env_name(meter_id, what), entry.get(what))
        return None if value is None else str(value)

    def key(what: str) -> bytes:
        text = secret(what)
        if text is None:
            raise SecretError(f"meter {meter_id}: {what} is missing (key file or {env_name(meter_id, what)})")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise SecretError(f"meter {meter_id}: {what} is not hex") from None
        if len(raw) != 16:
            raise SecretError(f"meter {meter_id}: {what} must be 16 bytes (AES-128), got {len(raw)}")
        return raw

    ciphered = authentication == "hls_gmac" if ciphering is None else ciphering
    password = None
    if authentication == "low":
        text = secret("password")
        if text is None:
            raise SecretError(f"meter {meter_id}: password is missing (key file or {env_name(meter_id, 'password')})")
        password = text.encode()
    if authentication == "hls_gmac" or ciphered:
        return Security(authentication, password, key("authentication_key"), key("encryption_key"), system_title)
    return Security(authentication, password, system_title=system_title)


class CounterFile:
    """The next invocation counter of one meter's client, kept across restarts (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int:
        try:
            return max(0, int(self.path.read_text(encoding="ascii").strip() or 0))
        except (OSError, ValueError):
            return 0

    def save(self, counter: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{counter}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


__all__ = ["CounterFile", "SecretError", "env_name", "key_file_problem", "load_key_file", "security_for"]
