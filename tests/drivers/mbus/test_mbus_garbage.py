"""Garbage never crashes the M-Bus decoder: any bytes are a telegram or a FrameError that says
what is wrong, never another exception (an IndexError would end a poll with a traceback)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mbus import frame, records


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0x72, 0x73, 0x77, 0x70, 0x78, 0x00]))
def test_any_user_data_decodes_or_is_a_frame_error(data: bytes, ci: int) -> None:
    try:
        telegram = records.decode(ci, data)
    except frame.FrameError as exc:
        assert exc.detail
        return
    for rec in telegram.records:
        assert rec.code  # every record has a code, a value or a reason why not
        assert rec.value is not None or rec.problem or not rec.data or rec.quantity.name in ("date", "datetime")


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_frame_or_a_frame_error(raw: bytes) -> None:
    try:
        frame.parse(raw)
    except frame.FrameError as exc:
        assert exc.detail


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_a_valid_long_frame_of_any_records_round_trips_the_link_layer(data: bytes) -> None:
    raw = frame.long_frame(frame.RSP_UD, 5, frame.CI_VARIABLE, data[:252])
    parsed = frame.parse(raw)
    assert isinstance(parsed, frame.LongFrame) and parsed.data == data[:252]
