"""A real Mosquitto broker on loopback, for tests, the demo and benchmarks.

The broker runs as a subprocess with a temp config that keeps what SPEC §7 needs and Mosquitto's
defaults do not: persistence on (so a restart keeps queued QoS 1 messages and persistent sessions),
no per-client queue limit (the default 1000 drops the excess silently), persistent clients never
expire. Usage::

    with Broker() as broker:
        client.connect(broker.host, broker.port)

TLS and passwords: `Broker(tls=BrokerTls(ca, cert, key, require_certificate=True),
password_file=make_password_file(path, {"gw": "secret"}))` serves TLS only on `port` and refuses
anonymous clients.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["Broker", "BrokerError", "BrokerTls", "make_password_file"]

_MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """The broker could not be started (missing binary, bad config, exited early)."""


def _find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    for path in _MOSQUITTO_PATHS:
        if os.access(path, os.X_OK):
            return path
    msg = (
        "mosquitto not found (looked on PATH and in /usr/sbin): install Debian's 'mosquitto' package "
        "(apt-get install mosquitto)"
    )
    raise BrokerError(msg)


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """The broker's certificate and key, the CA its clients' certificates must chain to."""

    ca: Path
    cert: Path
    key: Path
    #: Refuse clients that present no certificate signed by `ca`.
    require_certificate: bool = False


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """Write a Mosquitto password file (hashed, with Debian's mosquitto_passwd) for `users`."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.access(tool, os.X_OK):
        msg = "mosquitto_passwd not found: install Debian's 'mosquitto' package (apt-get install mosquitto)"
        raise BrokerError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    for user, password in users.items():
        done = subprocess.run([tool, "-b", str(path), user, password], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"mosquitto_passwd could not add {user!r} to {path}: {done.stderr.strip() or done.stdout.strip()}"
            raise BrokerError(msg)
    return path


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Broker:
    """Mosquitto on 127.0.0.1 with persistence in `data_dir` (a temp dir if None).

    `start()` returns once the port accepts connections; `stop()` sends SIGTERM so Mosquitto saves
    its persistence file (kill=True sends SIGKILL: whatever arrived since the last autosave is lost,
    as on a real crash; Mosquitto checks the interval in whole seconds, so with the default of 1 s
    that is up to ~2-3 s); `restart()` keeps port and data dir.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        autosave_interval: int = 1,
        max_inflight_messages: int = 1000,
        tls: BrokerTls | None = None,
        password_file: Path | None = None,
    ) -> None:
        self._binary = _find_mosquitto()
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="mosquitto-")
            data_dir = Path(self._own_dir.name)
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else _free_port(self.host)
        self.autosave_interval = autosave_interval
        self.max_inflight_messages = max_inflight_messages
        self.tls = tls
        self.password_file = password_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _write_config(self) -> None:
        lines = [
            # One listener per port: TLS settings and the password file apply to it alone.
            "per_listener_settings true",
            f"listener {self.port} {self.host}",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        if self.password_file is not None:
            lines += [f"password_file {self.password_file}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        lines += [
            "persistence true",
            f"persistence_location {self.data_dir}",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval}",
            # 0 = no limit; the default (1000 per client) silently drops what an offline
            # persistent subscriber missed beyond that.
            "max_queued_messages 0",
            f"max_inflight_messages {self.max_inflight_messages}",
            # persistent_client_expiration is left unset: persistent sessions never expire.
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto drops to user 'mosquitto', which cannot write our temp dir.
            lines.append(f"user {getpass.getuser()}")
        self.config_path.write_text("\n".join(lines) + "\n")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 10.0) -> None:
        """Start Mosquitto and return once it accepts TCP connections on `port`."""
        if self.running:
            return
        if self._accepts():
            msg = f"cannot start mosquitto: something already listens on {self.host}:{self.port}"
            raise BrokerError(msg)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._proc = subprocess.Popen(
            [self._binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._close_proc()
                msg = (
                    f"mosquitto on {self.host}:{self.port} exited with code {code} at start\n"
                    f"stderr: {stderr.strip()}\nlog tail:\n{self.log_tail()}"
                )
                raise BrokerError(msg)
            if self._accepts():
                return
            if time.monotonic() > deadline:
                self.stop(kill=True)
                msg = (
                    f"mosquitto on {self.host}:{self.port} did not accept connections after {timeout} s\n"
                    f"log tail:\n{self.log_tail()}"
                )
                raise BrokerError(msg)
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file) or, with kill=True, SIGKILL."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_proc()

    def _close_proc(self) -> None:
        if self._proc is not None:
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None

    def restart(self, kill: bool = False) -> None:
        """Stop and start again on the same port with the same data dir."""
        self.stop(kill=kill)
        self.start()

    def close(self) -> None:
        """Stop the broker and remove the data dir if this object created it."""
        self.stop()
        if self._own_dir is not None:
            with contextlib.suppress(OSError):
                self._own_dir.cleanup()
            self._own_dir = None

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Broker({self.url}, {state}, data_dir={self.data_dir})"
