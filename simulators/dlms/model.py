"""The consumption model of one simulated meter: what its registers and its load profile hold at any instant.

Energy is an integer number of Wh per 15-minute interval (a daily shape times a per-meter size, with seeded
noise), accumulated from the start of the history (`history_days` before the fleet started). The registers are
exact integers (scaler 0, Wh), so the value read live at an interval boundary equals the profile's entry for it.
The history is built with numpy for all intervals at once and extended as time passes; nothing is stored per
request, which keeps a fleet of 500 meters cheap.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

INTERVAL_S = 900
DAY_INTERVALS = 86_400 // INTERVAL_S

# Status byte of the load profile (IDIS / DSMR "AMR profile status", 0-0:96.10.1.255); TAMPER is the
# simulator's use of a bit the standard leaves to the manufacturer.
STATUS_CRITICAL = 0x01
STATUS_CLOCK_INVALID = 0x02
STATUS_DATA_NOT_VALID = 0x04
STATUS_TAMPER = 0x10
STATUS_CLOCK_ADJUSTED = 0x20
STATUS_POWER_DOWN = 0x80

# Hour-of-day shape of a household's load (relative), 24 values.
_SHAPE = np.array([0.45, 0.4, 0.38, 0.37, 0.38, 0.45, 0.7, 1.0, 0.95, 0.8, 0.7, 0.7,
                   0.75, 0.7, 0.65, 0.7, 0.85, 1.2, 1.5, 1.45, 1.25, 1.0, 0.75, 0.55])


@dataclass
class Consumption:
    """Cumulative energy of one meter per interval boundary since `origin` (a UTC midnight).

    The time-of-use registers split import by tariff: t4 on weekends; on weekdays t1 07-17 h, t2 (peak)
    17-21 h, t3 the night."""

    seed: int
    index: int
    origin: dt.datetime
    import_cum: np.ndarray = field(init=False)
    export_cum: np.ndarray = field(init=False)
    tou_cum: np.ndarray = field(init=False)  # shape (4, n+1)
    tou_export_cum: np.ndarray = field(init=False)
    mean_wh: float = field(init=False)
    pv_peak_wh: int = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, self.index, 0])
        # One generator per series: values drawn in whatever chunks reads ask for are the same values.
        self._noise = np.random.default_rng([self.seed, self.index, 1])
        self._sun = np.random.default_rng([self.seed, self.index, 2])
        self.mean_wh = float(rng.uniform(60, 260))  # 0.24 .. 1.04 kW average
        self.pv_peak_wh = int(rng.integers(200, 900)) if self.index % 5 == 0 else 0
        self.import_cum = np.zeros(1, dtype=np.int64)
        self.export_cum = np.zeros(1, dtype=np.int64)
        self.tou_cum = np.zeros((4, 1), dtype=np.int64)
        self.tou_export_cum = np.zeros((4, 1), dtype=np.int64)
        # A register that did not start at zero: the meter was installed some time ago.
        self.base_wh = int(rng.integers(1_000_000, 40_000_000))

    @property
    def intervals(self) -> int:
        """Intervals generated so far (boundaries - 1)."""
        return len(self.import_cum) - 1

    def extend_to(self, k: int) -> None:
        """Generate intervals up to boundary k (intervals are never regenerated: same seed, same values)."""
        n0 = self.intervals
        if k <= n0:
            return
        # Vectorised over the new intervals (a fleet of 500 builds 30 days each): hour, minute and ISO weekday
        # from UTC seconds; 1970-01-01 was a Thursday.
        secs = int(self.origin.timestamp()) + INTERVAL_S * np.arange(n0, k, dtype=np.int64)
        hours = (secs // 3600) % 24
        weekday = (secs // 86_400 + 3) % 7 + 1
        noise = self._noise.gamma(8.0, 1 / 8.0, size=k - n0)
        imp = np.rint(self.mean_wh * _SHAPE[hours] * noise).astype(np.int64)
        if self.pv_peak_wh:
            frac = hours + (secs // 60) % 60 / 60
            sun = np.clip(np.sin(math.pi * (frac - 6) / 12), 0, None)
            exp = np.rint(self.pv_peak_wh * sun * self._sun.uniform(0.6, 1.0, size=k - n0)).astype(np.int64)
        else:
            exp = np.zeros(k - n0, dtype=np.int64)
        tariffs = np.where(weekday >= 6, 4, np.where((hours >= 7) & (hours < 17), 1,
                                                     np.where((hours >= 17) & (hours < 21), 2, 3)))
        self.import_cum = np.concatenate([self.import_cum, self.import_cum[-1] + np.cumsum(imp)])
        self.export_cum = np.concatenate([self.export_cum, self.export_cum[-1] + np.cumsum(exp)])
        tou = np.stack([np.where(tariffs == t, imp, 0) for t in (1, 2, 3, 4)])
        self.tou_cum = np.concatenate([self.tou_cum, self.tou_cum[:, -1:] + np.cumsum(tou, axis=1)], axis=1)
        tou = np.stack([np.where(tariffs == t, exp, 0) for t in (1, 2, 3, 4)])
        self.tou_export_cum = np.concatenate([self.tou_export_cum, self.tou_export_cum[:, -1:]
                                              + np.cumsum(tou, axis=1)], axis=1)

    def boundary(self, when: dt.datetime) -> tuple[int, float]:
        """Index of the last boundary at or before `when`, and the fraction of the next interval elapsed."""
        secs = (when - self.origin).total_seconds()
        k = max(0, int(secs // INTERVAL_S))
        return k, max(0.0, secs / INTERVAL_S - k)

    def _live(self, series: Callable[[], np.ndarray], when: dt.datetime) -> int:
        k, frac = self.boundary(when)
        self.extend_to(k + 1)
        cum = series()  # after extend_to, which replaces the arrays
        return int(cum[k] + math.floor((int(cum[k + 1]) - int(cum[k])) * frac))

    def energy_import(self, when: dt.datetime) -> int:
        return self.base_wh + self._live(lambda: self.import_cum, when)

    def energy_export(self, when: dt.datetime) -> int:
        return self._export_base() + self._live(lambda: self.export_cum, when)

    def _export_base(self) -> int:
        return self.base_wh // 20 if self.pv_peak_wh else 0

    def energy_tou(self, tariff: int, when: dt.datetime, export: bool = False) -> int:
        """Import (or export) register of one tariff: t1 + .. + t4 equals the total at every instant."""
        total = self._export_base() if export else self.base_wh
        shares = (total * 5 // 10, total * 2 // 10, total * 2 // 10)
        base = shares[tariff - 1] if tariff < 4 else total - sum(shares)
        if export:
            return base + self._live(lambda: self.tou_export_cum[tariff - 1], when)
        return base + self._live(lambda: self.tou_cum[tariff - 1], when)

    def power_w(self, when: dt.datetime) -> int:
        """Average active import power of the current interval (W)."""
        k, _ = self.boundary(when)
        self.extend_to(k + 1)
        return int(self.import_cum[k + 1] - self.import_cum[k]) * (3600 // INTERVAL_S)

    def profile_energy(self, k: int) -> int:
        """Import register value captured at boundary k."""
        self.extend_to(k)
        return self.base_wh + int(self.import_cum[k])


def floor_interval(when: dt.datetime) -> dt.datetime:
    epoch = int(when.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % INTERVAL_S, dt.UTC)
