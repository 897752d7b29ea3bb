"""Typed errors of meter-gateway. Facts travel as attributes, not only in the message.

Our exception hierarchy::

    GatewayError
      ConfigError              (problems: list of ConfigProblem(key, line, message))
      DriverError              (meter_id, where)
        MeterTimeout
        ModbusExceptionResponse  (code, name)
        DecodeError              (address, words)
        ConnectionFailed
          NotSent                (a publish that certainly reached no broker)
      PayloadError             (topic, reason)
      SpoolError
        SpoolFull
        SpoolUnwritable          (why: disk full, I/O error, read-only; retried, never fatal)
        SpoolDamaged             (the file is not a readable spool; salvaged)
      SinkError
        SinkUnavailable
      NotFound                 (what, key)
      InvalidRequest
        InvalidPeriod          (field)
        InvalidField           (field)
        KeyConflict            (key_name, key, correlation_id, differences)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class GatewayError(Exception):
    """Base of every error meter-gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a configuration file: which key, which line, what is wrong."""

    key: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.key} at line {self.line}" if self.line else self.key
        return f"{where}: {self.message}"


class ConfigError(GatewayError):
    """A configuration file (or a profile) is missing, unreadable or wrong in places."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class DriverError(GatewayError):
    """A meter could not be read. `kind` is a stable short name diagnostics group by."""

    kind = "driver_error"

    def __init__(self, meter_id: str | None, where: str, message: str) -> None:
        self.meter_id = meter_id
        self.where = where
        self.detail = message
        who = f"meter {meter_id} ({where})" if meter_id else where
        super().__init__(f"{who}: {message}")


class MeterTimeout(DriverError):
    kind = "timeout"


class ConnectionFailed(DriverError):
    kind = "connection"


class NotSent(ConnectionFailed):
    """A publish that certainly reached no broker: not connected, or refused by the client before
    it was written (a ConnectionFailed alone may have reached it)."""


class ModbusExceptionResponse(DriverError):
    """The device answered with a Modbus exception code."""

    kind = "modbus_exception"
    NAMES: ClassVar[dict[int, str]] = {
        1: "illegal function",
        2: "illegal data address",
        3: "illegal data value",
        4: "server device failure",
        5: "acknowledge",
        6: "server device busy",
        8: "memory parity error",
        10: "gateway path unavailable",
        11: "gateway target device failed to respond",
    }

    def __init__(self, meter_id: str | None, where: str, code: int) -> None:
        self.code = code
        self.name = self.NAMES.get(code, "unknown exception")
        super().__init__(meter_id, where, f"Modbus exception {code} ({self.name})")


class DecodeError(DriverError):
    kind = "decode"

    def __init__(self, meter_id: str | None, where: str, address: int, words: tuple[int, ...], why: str) -> None:
        self.address = address
        self.words = words
        super().__init__(meter_id, where, f"register {address:#06x} words {list(words)}: {why}")


class PayloadError(GatewayError):
    """An MQTT payload could not be turned into a balance update."""

    def __init__(self, topic: str, reason: str, message: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"topic {topic}: {message}")


class SpoolError(GatewayError):
    """The local spool failed."""


class SpoolFull(SpoolError):
    """The spool reached its size limit; producers must wait."""


class SpoolUnwritable(SpoolError):
    """The spool cannot write now (disk full, I/O error, read-only file system): try again later.
    `why` is short and stable ("disk full", ...), for readiness, events and metrics."""

    def __init__(self, why: str, message: str) -> None:
        self.why = why
        super().__init__(message)


class SpoolDamaged(SpoolError):
    """The spool file cannot be read as a spool (not a database, malformed, failed its check)."""


class SinkError(GatewayError):
    """The storage sink failed."""


class SinkUnavailable(SinkError):
    """The storage sink cannot be reached now; try again later."""


class CoreUnavailable(GatewayError):
    """The gateway's core process does not answer its API process now (starting, or restarting after
    a crash); try again in a moment."""


class NotFound(GatewayError):
    def __init__(self, what: str, key: str) -> None:
        self.what = what
        self.key = key
        super().__init__(f"{what} {key!r} not found")


class InvalidRequest(GatewayError):
    """A request was well-formed but asks for something impossible."""


class InvalidPeriod(InvalidRequest):
    """A period that cannot be answered: its end is not after its start, or it lies wholly in
    the future. `field` names the bound at fault as the caller spelt it ('from', 'start', ...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class InvalidField(InvalidRequest):
    """One field of a request is wrong (the API answers 422 naming it)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}")


class KeyConflict(InvalidRequest):
    """A request reuses the key of a stored command with a different body (the API answers 409).

    `key_name` says which key ('reference' or 'Idempotency-Key'); `differences` lists each field
    that differs, as Command.differences says it."""

    def __init__(self, key_name: str, key: str, correlation_id: str, differences: list[str]) -> None:
        self.key_name = key_name
        self.key = key
        self.correlation_id = correlation_id
        self.differences = differences
        new = "a new payment needs a new reference" if key_name == "reference" else "a new command needs a new key"
        super().__init__(f"{key_name} {key!r} already names command {correlation_id}, which this request does "
                         f"not repeat ({'; '.join(differences)}): {new}")
