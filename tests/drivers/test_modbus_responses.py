"""drivers.modbus.responses: the fast register-read responses decode as pymodbus' own do."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from drivers.modbus.responses import FastHoldingRegistersResponse, FastInputRegistersResponse

PAIRS = [(FastHoldingRegistersResponse, ReadHoldingRegistersResponse),
         (FastInputRegistersResponse, ReadInputRegistersResponse)]


@given(st.lists(st.integers(0, 0xFFFF), max_size=125), st.booleans(), st.binary(max_size=3))
def test_registers_are_pymodbus_registers_as_a_tuple(words: list[int], odd: bool, tail: bytes) -> None:
    # A byte count, the words, maybe an odd last byte (ignored by both), maybe bytes after the count.
    body = struct.pack(f">{len(words)}H", *words) + (b"\x07" if odd else b"")
    data = bytes([len(body)]) + body + tail + b"\x00"
    for fast_class, slow_class in PAIRS:
        fast, slow = fast_class(), slow_class()
        fast.decode(data)
        slow.decode(data)
        assert fast.registers == tuple(slow.registers) == tuple(words)
        assert fast.function_code == slow.function_code


@pytest.mark.parametrize(("fast_class", "slow_class"), PAIRS)
def test_a_byte_count_past_the_packet_is_refused_alike(fast_class: type, slow_class: type) -> None:
    data = bytes([9, 0, 1, 0, 2])
    for pdu in (fast_class(), slow_class()):
        with pytest.raises(ModbusIOException, match="byte_count 9 > length of packet 5"):
            pdu.decode(data)


def test_described_without_the_register_values() -> None:
    pdu = FastInputRegistersResponse(dev_id=3, transaction_id=7)
    pdu.decode(bytes([4, 0, 1, 0, 2]))
    assert str(pdu) == "FastInputRegistersResponse(dev_id=3, transaction_id=7, registers=2)"
