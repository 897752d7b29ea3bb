"""Leak (issue 18 item 7): a volume register that advanced at every read for a day raises one
`leak_suspected` event per run; a quiet read or a long step between reads ends the run."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from gateway.model import Channel, Event, EventKind, Kind, Reading, Status
from gateway.validate.cross import CrossChecks
from gateway.validate.thresholds import ThresholdTable
from gateway.validate.validator import Validator

T0 = datetime(2026, 3, 2, tzinfo=UTC)
STEP = timedelta(minutes=15)
DAY = 96  # 15-minute reads


def volume(advances: Sequence[float], meter: str = "W-1", start: float = 100.0) -> list[Reading]:
    out, value = [], start
    for k, a in enumerate([0.0, *advances]):
        value = round(value + a, 3)
        out.append(Reading(meter, Channel.VOLUME, T0 + k * STEP, value, Kind.CUMULATIVE, received_at=T0 + k * STEP))
    return out


def run(readings: Sequence[Reading], validator: Validator | None = None, *, one_batch: bool = False
        ) -> tuple[list[Reading], list[Event]]:
    validator = validator or Validator()
    cross = CrossChecks(validator)
    out: list[Reading] = []
    events: list[Event] = []
    for batch in ([list(readings)] if one_batch else [[r] for r in readings]):
        got, found = validator.validate(batch)
        got, crossed = cross.check(got)
        out += got
        events += [e for e in found + crossed if e.kind is EventKind.LEAK_SUSPECTED]
    return out, events


def test_a_day_of_flow_at_every_read_is_one_leak_event_and_the_reads_stay_valid() -> None:
    readings, events = run(volume([0.002] * (DAY + 10)))
    assert len(events) == 1
    assert events[0].meter_id == "W-1" and events[0].ts == T0 + DAY * STEP
    assert "24.0 h" in events[0].detail and "leak_hours" in events[0].detail
    assert all(r.status is Status.VALID for r in readings)


def test_a_household_with_quiet_reads_raises_nothing() -> None:
    day = [0.0] * 24 + [0.01] * 72  # six quiet hours a night
    _, events = run(volume(day * 3))
    assert events == []


def test_a_quiet_read_ends_the_run_and_a_new_day_of_flow_raises_again() -> None:
    _, events = run(volume([0.002] * (DAY + 4) + [0.0] + [0.002] * (DAY + 4)))
    assert len(events) == 2


def test_a_long_step_between_reads_breaks_the_run() -> None:
    readings = volume([0.002] * (DAY + 10))
    gappy = readings[:40] + readings[60:]  # five hours without a read in the middle
    _, events = run(gappy)
    assert events == []


def test_one_batch_or_read_by_read_gives_the_same_events_and_the_hours_are_configurable() -> None:
    readings = volume([0.002] * (DAY + 10))
    _, batch = run(readings, one_batch=True)
    _, single = run(readings)
    assert [(e.ts, e.detail) for e in batch] == [(e.ts, e.detail) for e in single]
    _, sooner = run(readings, Validator(thresholds=ThresholdTable(fleet={"leak_hours": 6.0})))
    assert sooner and sooner[0].ts == T0 + 24 * STEP


def test_energy_registers_are_not_watched() -> None:
    energy = [Reading("E-1", Channel.ENERGY_IMPORT, r.ts, r.value, Kind.CUMULATIVE, received_at=r.ts)
              for r in volume([0.002] * (DAY + 10))]
    _, events = run(energy)
    assert events == []
