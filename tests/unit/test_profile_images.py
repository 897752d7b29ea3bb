"""Each shipped profile decodes a register image of its meter to the numbers the meter's display shows.

The image is built from the simulator's own register table for the model
(simulators/modbus/datasheets/<name>.toml, written from the public register map), never from the
profile; the meter holds the values below, as its display would show them. Every value is chosen
so that each table's resolution holds it exactly (0.1 kWh, 0.01 A, 0.1 Hz, ...), so the decoded
value must equal it exactly: 229.8, not 229.8000030517578, and 12345.6 kWh from a float32 Wh
register, not 12345.599609375.
"""

from __future__ import annotations

import pytest

from gateway.config.profiles import load_profiles
from gateway.model import Channel
from simulators.modbus.datasheet import datasheets
from simulators.modbus.meter import SimMeter
from tests.unit.test_profile_datasheets import ONE_WAY, T0, both_decoders, poll_of, quantity_of

SHIPPED = load_profiles()

#: What the meter's display shows, in the quantities' base units (kWh, kW, V, A, Hz, m3, m3/h).
SHOWN: dict[str, dict[str, float]] = {
    "importing": {
        "energy_import": 12345.6, "energy_export": 321.1, "power": 1.85,
        "voltage_l1": 229.8, "voltage_l2": 231.2, "voltage_l3": 228.4,
        "current_l1": 5.25, "current_l2": 4.5, "current_l3": 3.75,
        "frequency": 49.9, "power_factor": 0.93,
        "volume": 1234.567, "flow": 1.25, "heat_energy": 8765.4,
        "energy_import_t1": 8000.5, "energy_import_t2": 4345.1, "energy_export_t1": 300.5, "energy_export_t2": 20.6,
    },
    "exporting": {
        "energy_import": 7.5, "energy_export": 98765.4, "power": -2.75,
        "voltage_l1": 240.1, "voltage_l2": 239.5, "voltage_l3": 241.3,
        "current_l1": 11.5, "current_l2": 0.25, "current_l3": 16.0,
        "frequency": 50.1, "power_factor": 0.97,
        "volume": 0.5, "flow": 0.0, "heat_energy": 0.1,
        "energy_import_t1": 5.25, "energy_import_t2": 2.25, "energy_export_t1": 90000.4, "energy_export_t2": 8765.0,
    },
}


class ShowingMeter(SimMeter):
    """A simulated meter that holds exactly the values given (no load model)."""

    def __init__(self, shown: dict[str, float]) -> None:
        super().__init__("M-1", seed=1, start=T0)
        self.shown = shown

    def quantities(self) -> dict[str, float]:
        return dict(self.shown)


@pytest.mark.parametrize("state", sorted(SHOWN))
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_profile_decodes_its_meters_image_to_what_the_display_shows(name: str, state: str) -> None:
    profile, sheet = SHIPPED[name], datasheets()[name]
    shown = SHOWN[state]
    if name in ONE_WAY:  # one counter, both ways; no sign on its power (see ONE_WAY)
        shown = {**shown, "energy_total": shown["energy_import"], "power": abs(shown["power"])}
    image = ShowingMeter(shown).encode(sheet)
    for decoder, readings in both_decoders(profile, poll_of(profile, image)).items():
        got = {channel: value for channel, (value, _quality) in readings.items()}
        expected = {spec.channel: shown[quantity_of(name, spec.channel)] for spec in profile.registers}
        assert got == expected, f"{decoder}, profile {name} against {sheet.document}"
        assert all(repr(got[c]) == repr(expected[c]) for c in got), decoder


def test_every_listed_make_has_a_profile() -> None:
    """Issue 16's list: the models a profile must exist for (by file name)."""
    wanted = {"sdm72dm", "sdm120", "sdm230", "sdm630", "abb_b21", "abb_b23", "em24", "cg_em340", "cg_et340",
              "iem3x55", "pm5xxx", "janitza_umg604", "janitza_umg96rm", "socomec_countis_e2x", "finder_7m38",
              "inepro_pro380", "orno_we514", "orno_we516", "aquametro_calec_st"}
    assert wanted <= set(SHIPPED)
    assert len(SHIPPED) >= 20
    assert all(Channel.ENERGY_IMPORT in {s.channel for s in p.registers} or p.utility.value != "electricity"
               for p in SHIPPED.values())
