"""The Green Button feed's pure parts: exact integer values per usage point, quality codes, time-zone
parameters."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from api.espi.feed import LIKE_DAY, LINEAR, QUESTIONABLE, VALIDATED, UsagePoint, feed, local_time, multiplier, quality
from gateway.model import Channel, Kind, Reading, Status
from gateway.model.meters import Utility
from storage.records import ConsumptionBucket

T = datetime(2026, 3, 2, tzinfo=UTC)
ESPI = "{http://naesb.org/espi}"


def bucket(value: float | None, hour: int = 0, *, estimated: bool = False, suspect: bool = False,
           note: str | None = None) -> ConsumptionBucket:
    start = T + timedelta(hours=hour)
    read = Reading("M-1", Channel.ENERGY_IMPORT, start, 1.0, Kind.CUMULATIVE,
                   status=Status.ESTIMATED if estimated else Status.VALID, note=note)
    return ConsumptionBucket(start=start, end=start + timedelta(hours=1), value=value, first_read=read,
                             last_read=read, estimated=estimated, suspect=suspect)


def test_each_usage_point_keeps_its_own_decimals_exactly() -> None:
    fine = UsagePoint("M-1", Utility.ELECTRICITY, T, T + timedelta(hours=2), [bucket(0.0005), bucket(1.5, 1)])
    coarse = UsagePoint("M-1", Utility.ELECTRICITY, T + timedelta(hours=2), T + timedelta(hours=3), [bucket(2.0, 2)])
    water = UsagePoint("W-1", Utility.WATER, T, T + timedelta(hours=1), [bucket(0.123, 0)])
    assert (multiplier(fine), multiplier(coarse), multiplier(water)) == (-1, 0, -3)
    root = ET.fromstring("".join(feed("C-1", [fine, coarse, water], zone="UTC", now=T, base="/espi")))
    powers = [int(e.text or 0) for e in root.iter(f"{ESPI}powerOfTenMultiplier")]
    values = [[int(v.text or 0) for v in b.iter(f"{ESPI}value")] for b in root.iter(f"{ESPI}IntervalBlock")]
    assert powers == [-1, 0, -3]
    assert values == [[5, 15000], [2000], [123]]  # 0.5 Wh and 1,500 Wh at 10^-1; 2,000 Wh; 0.123 m3 at 10^-3
    assert Decimal(5).scaleb(-1) == Decimal("0.5")


def test_quality_codes() -> None:
    assert quality(bucket(1.0)) == VALIDATED
    assert quality(bucket(1.0, suspect=True)) == QUESTIONABLE
    assert quality(bucket(1.0, estimated=True, note="estimate=linear")) == LINEAR
    assert quality(bucket(1.0, estimated=True, note="estimate=profile")) == LIKE_DAY


def test_local_time_parameters() -> None:
    assert local_time("UTC", T) == (0, 0, "FFFFFFFF", "FFFFFFFF")
    assert local_time("Africa/Nairobi", T) == (10800, 0, "FFFFFFFF", "FFFFFFFF")
    assert local_time("America/New_York", T) == (-18000, 3600, "360E2000", "B40E2000")
    offset, dst, *_ = local_time("Europe/Berlin", T)
    assert (offset, dst) == (3600, 3600)
