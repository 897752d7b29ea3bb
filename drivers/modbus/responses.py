"""The register-read responses (FC 03, FC 04) a client decodes, at a fraction of pymodbus' cost.

pymodbus' own response classes unpack each register with a struct call of its own and, on
every response, format the whole PDU, registers included, for a debug line that is then
dropped (`DecodePDU.decode` calls `str(pdu)` before the logger decides). At a thousand meters
a second that was about a tenth of the gateway's CPU. These subclasses, registered per client
(`register_fast_responses`, pymodbus' API for custom responses), unpack all registers with one
struct call into a tuple and describe themselves without the register values; the frame
checks, exception responses and RTU framing stay pymodbus' own.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Protocol

from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse


class _Registrar(Protocol):
    def register(self, custom_response_class: type[ModbusPDU]) -> None: ...


@cache
def _words(count: int) -> struct.Struct:
    """Big-endian 16-bit words; one Struct per register count (at most 125 of them)."""
    return struct.Struct(f">{count}H")


def _decode(pdu: ModbusPDU, data: bytes) -> None:
    # What ReadHoldingRegistersResponse.decode does (an odd last byte is ignored), in one call.
    if (data_len := data[0]) >= len(data):
        msg = f"byte_count {data_len} > length of packet {len(data)}"
        raise ModbusIOException(msg, function_code=pdu.function_code)
    pdu.registers = _words(data_len // 2).unpack_from(data, 1)


def _describe(pdu: ModbusPDU) -> str:
    return (f"{type(pdu).__name__}(dev_id={pdu.dev_id}, transaction_id={pdu.transaction_id}, "
            f"registers={len(pdu.registers)})")


class FastHoldingRegistersResponse(ReadHoldingRegistersResponse):
    """FC 03 response; `registers` is a tuple of ints."""

    def decode(self, data: bytes) -> None:
        _decode(self, data)

    def __str__(self) -> str:
        return _describe(self)


class FastInputRegistersResponse(ReadInputRegistersResponse):
    """FC 04 response; `registers` is a tuple of ints."""

    def decode(self, data: bytes) -> None:
        _decode(self, data)

    def __str__(self) -> str:
        return _describe(self)


def register_fast_responses(client: _Registrar) -> None:
    """Make `client` decode register reads into the classes above."""
    client.register(FastHoldingRegistersResponse)
    client.register(FastInputRegistersResponse)
