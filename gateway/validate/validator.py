"""Stage 3 entry: flag a batch of readings, set their status, and raise events.

Status rule (documented for utility engineers):
  rejected  if OUT_OF_RANGE (physically impossible)
  suspect   if REGRESSION, SPIKE, TAMPER or DUPLICATE_CONFLICT
  valid     otherwise (ROLLOVER alone is valid: the wrap is counted, not an error)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

import numpy as np

from gateway.model import Channel, Event, EventKind, Kind, Quality, Reading, Severity, Status
from gateway.validate.checks import out_of_range, regression_and_rollover

REJECT = Quality.OUT_OF_RANGE
SUSPECT = Quality.REGRESSION | Quality.SPIKE | Quality.TAMPER | Quality.DUPLICATE_CONFLICT

#: Physical limits per channel (documented defaults; nominal 230 V ±20 % would be
#: a tighter rule for a later issue). Values outside are impossible, not just odd.
LIMITS: dict[Channel, tuple[float, float]] = {
    Channel.VOLTAGE_L1: (0.0, 1000.0),
    Channel.VOLTAGE_L2: (0.0, 1000.0),
    Channel.VOLTAGE_L3: (0.0, 1000.0),
    Channel.FREQUENCY: (45.0, 65.0),
    Channel.POWER_FACTOR: (-1.0, 1.0),
    Channel.ENERGY_IMPORT: (0.0, 1e12),
    Channel.ENERGY_EXPORT: (0.0, 1e12),
    Channel.VOLUME: (0.0, 1e12),
    Channel.HEAT_ENERGY: (0.0, 1e12),
}


def status_for(quality: Quality) -> Status:
    if quality & REJECT:
        return Status.REJECTED
    if quality & SUSPECT:
        return Status.SUSPECT
    return Status.VALID


class Validator:
    """Keeps the last accepted cumulative value per (meter, channel) so checks span batches.

    Seed it from the store at start (`seed`), so the first reading after a restart is
    still checked against history.
    """

    def __init__(self, moduli: dict[tuple[str, Channel], float] | None = None) -> None:
        self._last: dict[tuple[str, Channel], tuple[datetime, float]] = {}
        self._moduli = moduli or {}

    def seed(self, last: Iterable[tuple[str, Channel, datetime, float]]) -> None:
        for meter_id, channel, ts, value in last:
            self._last[(meter_id, channel)] = (ts, value)

    def validate(self, readings: Sequence[Reading]) -> tuple[list[Reading], list[Event]]:
        if not readings:
            return [], []
        order = sorted(range(len(readings)), key=lambda i: (readings[i].meter_id, readings[i].channel, readings[i].ts))
        rows = [readings[i] for i in order]
        n = len(rows)
        values = np.fromiter((r.value for r in rows), dtype=np.float64, count=n)
        keys = [(r.meter_id, r.channel) for r in rows]
        cumulative = np.fromiter((r.kind is Kind.CUMULATIVE for r in rows), dtype=bool, count=n)
        # Previous value of the same series: the row before in this batch, else history.
        prev = np.full(n, np.nan)
        new_series = np.ones(n, dtype=bool)
        new_series[1:] = [keys[i] != keys[i - 1] for i in range(1, n)]
        prev[1:] = values[:-1]
        for i in np.flatnonzero(new_series):
            last = self._last.get(keys[i])
            prev[i] = last[1] if last is not None and last[0] < rows[i].ts else np.nan
        prev[~cumulative] = np.nan
        modulus = np.fromiter((self._moduli.get(k, math.nan) for k in keys), dtype=np.float64, count=n)
        limits = [LIMITS.get(r.channel, (math.nan, math.nan)) for r in rows]
        low = np.fromiter((lim[0] for lim in limits), dtype=np.float64, count=n)
        high = np.fromiter((lim[1] for lim in limits), dtype=np.float64, count=n)

        flags = regression_and_rollover(values, prev, modulus) | out_of_range(values, low, high)
        # A regressed reading must not become the reference for the next one: keep the
        # last good value as `prev` for rows that follow a regression in the same batch.
        regressed = (flags & int(Quality.REGRESSION)) != 0
        if regressed.any():
            flags = self._recheck_after_regression(rows, values, prev, modulus, flags, new_series)

        out: list[Reading] = []
        events: list[Event] = []
        for row, f in zip(rows, flags.tolist(), strict=True):
            quality = row.quality | Quality(f)
            status = status_for(quality)
            out.append(replace(row, quality=quality, status=status))
            if f & int(Quality.REGRESSION):
                events.append(Event(ts=row.ts, meter_id=row.meter_id, kind=EventKind.ANOMALY, severity=Severity.WARNING,
                                    detail=f"regression on {row.channel.value}: value {row.value:g} below the previous read"))
        for r in out:
            if r.kind is Kind.CUMULATIVE and r.status is not Status.REJECTED and not (r.quality & Quality.REGRESSION):
                key = (r.meter_id, r.channel)
                last = self._last.get(key)
                if last is None or last[0] < r.ts:
                    self._last[key] = (r.ts, r.value)
        return out, events

    def _recheck_after_regression(self, rows: list[Reading], values: np.ndarray, prev: np.ndarray,
                                  modulus: np.ndarray, flags: np.ndarray, new_series: np.ndarray) -> np.ndarray:
        # Rare path (a regression inside the batch): carry the last good value forward.
        reference = prev.copy()
        good = np.nan
        for i in range(len(rows)):
            if new_series[i]:
                good = prev[i]
            reference[i] = good
            if not flags[i] & int(Quality.REGRESSION) and not math.isnan(values[i]) and rows[i].kind is Kind.CUMULATIVE:
                good = values[i]
        recheck = regression_and_rollover(values, reference, modulus)
        keep = flags & ~(int(Quality.REGRESSION) | int(Quality.ROLLOVER))
        return keep | recheck
