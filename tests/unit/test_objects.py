"""RawObjects through an ObjectMap: codes to channels, the stated unit before the map's, bad values as
dead letters that keep the telegram, codes the map does not list skipped; the map's data-file shape."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.model import Channel, Kind, Source
from gateway.model.profiles import ObjectMap
from gateway.model.samples import RawObjects
from gateway.normalise.normaliser import Normaliser
from gateway.normalise.objects import ObjectReader

T = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
MAP = ObjectMap.from_dict({"name": "dsmr", "objects": [
    {"code": "1-0:1.8.1", "channel": "energy_import", "unit": "kWh", "kind": "cumulative"},
    {"code": "1-0:1.7.0", "channel": "power", "unit": "kW"},
    {"code": "0-1:24.2.1", "channel": "volume", "unit": "m3", "kind": "cumulative", "scale": 0.001},
]})


def telegram(*values: tuple[str, Decimal | float | str, str | None]) -> RawObjects:
    return RawObjects("E-1", T, T, values, b"/ISK5\\2M550T-1013\r\n...")


def test_codes_become_readings_in_the_canonical_unit() -> None:
    batch = ObjectReader(MAP, Source.P1).read(telegram(
        ("1-0:1.8.1", Decimal("001234.567"), "kWh"), ("1-0:1.7.0", "1500", "W"), ("0-1:24.2.1", 12345, None),
        ("0-0:96.1.1", "4530303434", None)))
    got = {r.channel: (r.value, r.kind, r.source) for r in batch.readings}
    assert got == {Channel.ENERGY_IMPORT: (1234.567, Kind.CUMULATIVE, Source.P1),
                   Channel.POWER: (1.5, Kind.INSTANTANEOUS, Source.P1),  # the W the telegram states, not the map's kW
                   Channel.VOLUME: (12.345, Kind.CUMULATIVE, Source.P1)}
    assert batch.deadletters == []
    assert all(r.ts == T and r.received_at == T and r.meter_id == "E-1" for r in batch.readings)


@pytest.mark.parametrize(("value", "unit", "reason"), [
    ("12,5", "kWh", "decode"),
    ("nan", None, "non_finite"),
    (True, None, "decode"),
    ("12.5", "V", "unit"),
])
def test_a_value_that_is_no_reading_is_a_dead_letter_and_the_rest_goes_on(
        value: str | bool, unit: str | None, reason: str) -> None:
    batch = ObjectReader(MAP, Source.P1).read(telegram(("1-0:1.8.1", value, unit), ("1-0:1.7.0", "0.25", None)))
    [dead] = batch.deadletters
    assert (dead.reason, dead.meter_id, dead.source, dead.where) == (reason, "E-1", "p1", "E-1 1-0:1.8.1")
    assert dead.payload.startswith("/ISK5") and dead.ts == T
    assert [(r.channel, r.value) for r in batch.readings] == [(Channel.POWER, 0.25)]


def test_the_normaliser_reads_coded_values_of_the_meters_it_has_maps_for() -> None:
    normaliser = Normaliser({}, {}, objects={"E-1": (MAP, Source.P1)})
    assert [r.channel for r in normaliser.sample(telegram(("1-0:1.7.0", 2, "kW"))).readings] == [Channel.POWER]
    other = normaliser.sample(RawObjects("E-2", T, T, (("1-0:1.7.0", 2, "kW"),)))
    assert [d.reason for d in other.deadletters] == ["unknown_meter"] and other.readings == []


@pytest.mark.parametrize(("doc", "message"), [
    ({"objects": []}, "object map: 'name' must be a non-empty string"),
    ({"name": "m", "objects": [{"channel": "power"}]}, "object map m: objects[0]: 'code' is missing"),
    ({"name": "m", "objects": [{"code": "c", "channel": "power", "colour": 1}]},
     "object map m: objects[0]: unknown key(s) colour"),
    ({"name": "m", "objects": [{"code": "c", "channel": "power", "unit": "V"}]},
     "object map m: objects[0]: unit 'V' cannot be converted to power (kW)"),
    ({"name": "m", "objects": [{"code": "c", "channel": "power"}, {"code": "c", "channel": "voltage_l1"}]},
     "object map m: code 'c' is listed twice"),
])
def test_a_bad_object_map_says_which_entry_and_key(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        ObjectMap.from_dict(doc)
