"""Pure logic behind diagnostics, with injected clocks: meter states, open events, rates, the bus
limiter, the page's chart and time formats. The samples are the drivers' real dataclasses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.ratelimit import BusLimiter, TokenBucket
from api.routes.status_page import Chart, ago
from drivers.modbus import MeterHealth
from drivers.samples import PollFailure, RawPayload, RawRegisters, RegisterBlock
from gateway.errors import MeterTimeout
from gateway.model import Batch, DeadLetter, Event, EventKind, Kind, Reading, Severity
from gateway.model.health import MeterState
from gateway.model.readings import Channel
from gateway.runtime.health import HealthBook, RateWindow, WatchedMeter, merge_deadletters, open_events

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    """Wall and monotonic time that the test moves."""

    def __init__(self) -> None:
        self.t = 0.0

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    def mono(self) -> float:
        return 1000.0 + self.t


def book(clock: Clock, silent_after: float = 600.0) -> HealthBook:
    meters = [WatchedMeter("M-1", "modbus", "bus unit 1", endpoint="bus", unit=1),
              WatchedMeter("M-2", "modbus", "bus unit 2", endpoint="bus", unit=2, active=False),
              WatchedMeter("P-1", "mqtt", "payg/P-1/balance"), WatchedMeter("P-2", "mqtt", "payg/P-2/balance")]
    return HealthBook(meters, recent_readings=3, silent_after=silent_after, clock=clock.wall, monotonic=clock.mono)


def health(**kw: object) -> MeterHealth:
    return MeterHealth("M-1", 1, **kw)  # type: ignore[arg-type]


def test_modbus_states_follow_the_driver_and_decoding() -> None:
    clock = Clock()
    hb = book(clock)
    assert hb.state("M-1", None) is MeterState.WAITING
    assert hb.state("M-2", None) is MeterState.INACTIVE
    assert hb.state("M-1", health(polls=1, last_success=T0)) is MeterState.OK
    assert hb.state("M-1", health(polls=2, last_success=T0, consecutive_failures=1)) is MeterState.FAILING
    assert hb.state("M-1", health(polls=3, consecutive_failures=3, comm_lost=True)) is MeterState.LOST
    # A poll that answered with words that do not decode makes the meter failing, with the reason.
    raw = RawRegisters("M-1", T0, T0, (RegisterBlock(4, 0, (0xFFFF, 0xFFFF)),), 0.01)
    dead = DeadLetter(T0, "modbus", "M-1", "non_finite", "energy_import at input 0x0000 decoded to nan", "[65535]",
                      meter_id="M-1")
    hb.observe([raw], Batch(deadletters=[dead]))
    assert hb.state("M-1", health(polls=4, last_success=T0)) is MeterState.FAILING
    s = hb.summary("M-1", health(polls=4, last_success=T0))
    assert s.last_error_kind == "non_finite" and s.last_error_at == T0 and "nan" in (s.last_error or "")
    good = RawRegisters("M-1", T0, T0 + timedelta(seconds=1), (RegisterBlock(4, 0, (1, 2)),), 0.02)
    hb.observe([good], Batch())
    assert hb.state("M-1", health(polls=5, last_success=T0)) is MeterState.OK
    d = hb.diagnostics("M-1", health(polls=5, last_success=T0))
    assert d.last_raw[0].words == (1, 2) and d.latency_p50_s == 0.01 and d.latency_p95_s == 0.02


def test_poll_failures_are_timed_and_counted_by_kind_per_endpoint() -> None:
    clock = Clock()
    hb = book(clock)
    clock.t = 30
    err = MeterTimeout("M-1", "bus unit 1", "read input 0x0000×2 timed out after 1.0 s")
    hb.observe([PollFailure("M-1", T0, err), PollFailure("M-1", T0, err)], Batch())
    s = hb.summary("M-1", health(polls=2, consecutive_failures=2))
    assert s.last_error_kind == "timeout" and s.last_error_at == T0 + timedelta(seconds=30)
    assert hb.poll_errors["bus"] == {"timeout": 2}
    assert hb.poll_rates["bus"].rate() == pytest.approx(2 / 30)


def test_mqtt_states_silence_and_bad_messages_matched_to_their_message() -> None:
    clock = Clock()
    hb = book(clock, silent_after=600)
    assert hb.state("P-1") is MeterState.WAITING
    clock.t = 601
    assert hb.state("P-1") is MeterState.SILENT  # nothing since start, for longer than silent_after
    at1, at2 = clock.wall(), clock.wall() + timedelta(milliseconds=1)
    bad = RawPayload("payg/P-1/balance", b"{", at1, "P-1")
    good = RawPayload("payg/P-1/balance", b'{"balance": 1}', at2, "P-1")
    dead = DeadLetter(at1, "mqtt", "payg/P-1/balance", "malformed_json", "not JSON", "{", meter_id="P-1")
    # Both in one pipeline pass: the dead letter belongs to the first message only.
    hb.observe([bad, good], Batch(deadletters=[dead]))
    assert hb.state("P-1") is MeterState.OK
    d = hb.diagnostics("P-1", None)
    assert (d.messages, d.failures, d.summary.last_error_kind) == (2, 1, "malformed_json")
    assert hb.message_errors == {"malformed_json": 1}
    hb.observe([RawPayload("payg/P-1/balance", b"[", at2 + timedelta(seconds=1), "P-1")],
               Batch(deadletters=[DeadLetter(at2 + timedelta(seconds=1), "mqtt", "t", "malformed_json", "", "[",
                                             meter_id="P-1")]))
    assert hb.state("P-1") is MeterState.FAILING
    clock.t += 700
    assert hb.state("P-1") is MeterState.SILENT
    assert [d.payload for d in hb.recent_deadletters(meter_id="P-1")] == ["[", "{"]
    assert hb.recent_deadletters(reason="other") == []


def test_recent_readings_are_bounded_and_counts_cover_every_meter() -> None:
    clock = Clock()
    hb = book(clock)
    readings = [Reading("M-1", Channel.POWER, T0 + timedelta(seconds=i), float(i), Kind.INSTANTANEOUS)
                for i in range(5)]
    hb.observe([], Batch(readings=readings))
    d = hb.diagnostics("M-1", health(polls=1, last_success=T0))
    assert [r.value for r in d.recent_readings] == [2.0, 3.0, 4.0]
    counts = hb.counts_by_state({"M-1": health(polls=1, last_success=T0)})
    assert counts[MeterState.OK] == 1 and counts[MeterState.INACTIVE] == 1 and counts[MeterState.WAITING] == 2
    assert sum(counts.values()) == 4


def ev(minute: int, kind: EventKind, meter: str = "M-1", acknowledged: bool = False,
       severity: Severity = Severity.WARNING) -> Event:
    return Event(T0 + timedelta(minutes=minute), meter, kind, severity, f"{kind} at {minute}", acknowledged)


@pytest.mark.parametrize(("events", "still_open"), [
    ([ev(1, EventKind.COMM_LOST)], [1]),
    ([ev(1, EventKind.COMM_LOST), ev(2, EventKind.COMM_RESTORED)], []),
    ([ev(1, EventKind.COMM_LOST), ev(2, EventKind.COMM_RESTORED), ev(3, EventKind.COMM_LOST)], [3]),
    ([ev(1, EventKind.COMM_LOST, meter="M-2"), ev(2, EventKind.COMM_RESTORED)], [1]),  # another meter's
    ([ev(1, EventKind.LOW_CREDIT), ev(2, EventKind.CREDIT_EXHAUSTED), ev(3, EventKind.TOPUP)], []),
    ([ev(1, EventKind.RELAY_DISCONNECTED), ev(2, EventKind.TOPUP)], [1]),
    ([ev(1, EventKind.TAMPER), ev(2, EventKind.ANOMALY, acknowledged=True)], [1]),
    ([ev(1, EventKind.EMERGENCY_CREDIT), ev(2, EventKind.LOW_CREDIT)], [1, 2]),
    ([ev(1, EventKind.EMERGENCY_CREDIT), ev(2, EventKind.TOPUP)], []),  # repaid by the top-up
    # A command the meter acknowledged is a record; a failed or timed-out one waits for a person.
    ([ev(1, EventKind.COMMAND, severity=Severity.INFO), ev(2, EventKind.COMMAND)], [2]),
    ([ev(1, EventKind.COMMAND), ev(2, EventKind.COMMAND, acknowledged=True)], [1]),
])
def test_open_events(events: list[Event], still_open: list[int]) -> None:
    newest_first = sorted(events, key=lambda e: e.ts, reverse=True)
    assert [e.ts.minute for e in open_events(newest_first)] == sorted(still_open, reverse=True)


def test_merge_keeps_each_dead_letter_once_newest_first() -> None:
    a = DeadLetter(T0, "mqtt", "t", "malformed_json", "x", "{")
    b = DeadLetter(T0 + timedelta(seconds=1), "mqtt", "t", "wrong_type", "y", "[]")
    assert merge_deadletters([a], [b, a], limit=10) == [b, a]
    assert merge_deadletters([a], [b], limit=1) == [b]


def test_rate_window_counts_the_last_minute() -> None:
    clock = Clock()
    rate = RateWindow(60, monotonic=clock.mono)
    for _ in range(30):
        rate.add()
        clock.t += 1
    assert rate.rate() == pytest.approx(30 / 30)
    clock.t += 44  # now t=74: the minute (14, 74] holds the adds at t=15..29
    assert rate.rate() == pytest.approx(15 / 60)
    clock.t += 60
    assert rate.rate() == 0


def test_token_bucket_and_bus_limiter() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 3, monotonic=clock.mono)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token comes back every half second
    clock.t += 0.5
    assert bucket.take() == 0.0
    clock.t += 100
    assert [bucket.take() for _ in range(4)][-1] > 0  # refills to the burst, never beyond
    limiter = BusLimiter(1.0, 1, monotonic=clock.mono)
    assert limiter.take("bus-1") == 0.0 and limiter.take("bus-1") > 0
    assert limiter.take("bus-2") == 0.0  # each bus has its own bucket
    with pytest.raises(ValueError, match="rate > 0"):
        BusLimiter(0, 1)


def test_chart_scales_series_into_the_box_and_marks_flags() -> None:
    series = [(T0, 10.0, None), (T0 + timedelta(minutes=1), 20.0, "spike"), (T0 + timedelta(minutes=2), 15.0, None)]
    chart = Chart.of("power", "kW", series, width=100, height=50)
    assert chart is not None
    points = [tuple(map(float, p.split(","))) for p in chart.points.split()]
    assert points == [(6.0, 44.0), (50.0, 6.0), (94.0, 25.0)]
    [(x, y, why)] = chart.flagged
    assert (x, y) == (50.0, 6.0) and "spike" in why and chart.last == 15.0
    flat = Chart.of("energy", "kWh", [(T0, 5.0, None)], width=100, height=50)
    assert flat is not None and flat.points == "50.0,25.0"
    assert Chart.of("x", "", []) is None


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s ago"), (59, "59 s ago"), (60, "1 min ago"),
                                                (7200, "2 h ago"), (3 * 86400, "3 d ago")])
def test_ago(seconds: int, text: str) -> None:
    assert ago(T0, now=T0 + timedelta(seconds=seconds)) == text
    assert ago(None) == "never"
