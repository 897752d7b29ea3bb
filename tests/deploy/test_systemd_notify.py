"""The gateway tells systemd READY=1 once serving, WATCHDOG=1 while its pipeline moves,
STOPPING=1 on SIGTERM — over a real notify socket, from a real process."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

from gateway.runtime.systemd import Notifier, PipelineProgress
from tests.fixtures.gateway import eventually
from tests.fixtures.ports import free_port


async def test_ready_watchdog_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n[api]\nport = {free_port()}\n')
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000", "PATH": "/usr/bin:/bin"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "run", "--config", str(config),
                                                env=env, stderr=asyncio.subprocess.PIPE)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                return messages

    try:
        await eventually(lambda: "READY=1" in drain(), timeout=30)
        await eventually(lambda: drain().count("WATCHDOG=1") >= 2, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    await eventually(lambda: "STOPPING=1" in drain(), timeout=5)
    sock.close()
    assert proc.returncode == 0, err.decode()
    assert messages.index("READY=1") < messages.index("WATCHDOG=1")


def test_no_socket_means_no_op() -> None:
    n = Notifier(env={})
    assert not n.enabled
    n.notify("READY=1")  # must not raise


def test_stuck_pipeline_is_not_moving() -> None:
    waiting, processed = [0], [0]
    p = PipelineProgress(lambda: waiting[0], lambda: processed[0])
    assert p.moving()  # idle: nothing waits
    waiting[0] = 5
    assert not p.moving()  # work waits, nothing processed
    processed[0] = 1
    assert p.moving()
    assert not p.moving()  # still waiting, no progress since the last look
