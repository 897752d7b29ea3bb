"""A raw HTTP/1.1 client for huge request bodies: it streams the body from a generator (never
holds it), reads the answer while it is still sending, and takes a server that answers early and
closes (its own write then fails) as the normal case it is."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to send before it stopped


def repeated(piece: bytes, total: int, *, chunked: bool) -> Iterator[bytes]:
    """`total` bytes of `piece` repeated, in CHUNK-sized pieces (framed for chunked transfer)."""
    block = (piece * (CHUNK // len(piece) + 1))[:CHUNK]
    framed = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    for _ in range(total // CHUNK):
        yield framed
    if chunked:
        yield b"0\r\n\r\n"


def head(method: str, path: str, port: int, headers: dict[str, str], *, length: int | None) -> bytes:
    """A request head: Content-Length `length`, or chunked transfer when it is None."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """(status, headers, body) once the whole answer is in `data`."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    status_line, *lines = data[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = data[end + 4:]
    if len(body) < int(headers.get("content-length", "0")):
        return None
    return int(status_line.split()[1]), headers, body


def exchange(port: int, request_head: bytes, body: Iterator[bytes], *, timeout: float = 60.0) -> Answer:
    """Send `request_head` and then `body` (until done, or until the server answered or stopped
    reading); return the server's answer. AssertionError if none came within `timeout` s."""
    deadline = time.monotonic() + timeout
    received = bytearray()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setblocking(False)
        pending = memoryview(request_head)
        in_head = True
        sending = True
        while (parsed := _parse(bytes(received))) is None:
            if time.monotonic() > deadline:
                msg = f"no answer within {timeout} s; sent {sent:,} body bytes, received {bytes(received[:200])!r}"
                raise AssertionError(msg)
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.5)
            if readable:
                try:
                    data = sock.recv(CHUNK)
                except ConnectionResetError:
                    break  # the server closed with our body unread; what it said is in `received`
                if not data:
                    break
                received += data
                continue
            if writable:
                if not pending:
                    in_head = False
                    chunk = next(body, None)
                    if chunk is None:
                        sending = False
                        continue
                    pending = memoryview(chunk)
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    sending = False  # it stopped reading: its answer is on the way, or already here
                    continue
                pending = pending[n:]
                if not in_head:
                    sent += n
    parsed = _parse(bytes(received))
    assert parsed is not None, f"the connection closed without a whole answer; got {bytes(received[:300])!r}"
    status, headers, answer = parsed
    return Answer(status, headers, answer, sent)
