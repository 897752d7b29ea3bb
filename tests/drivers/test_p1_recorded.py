"""The P1 decoder against recorded telegrams from dsmr_parser's public test suite
(shared/fixtures/p1/dsmr_parser, MIT, see its SOURCE.md), with dsmr_parser's own parser as the
independent oracle: every value it reads, ours reads with the same decimals and unit. Then the
same telegrams over a real TCP socket into the driver, and corrupted ones dead-lettered."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from dsmr_parser import telegram_specifications as specs
from dsmr_parser.objects import CosemObject, MBusObject
from dsmr_parser.parsers import TelegramParser

from drivers.obis_stream import p1
from drivers.obis_stream.reader import P1
from drivers.obis_stream.settings import PortSection
from gateway.model import Source
from simulators.stream import TelegramServer
from tests.drivers.obis_helpers import Got, canonical, reading
from tests.fixtures.gateway import eventually
from tests.fixtures.shared import shared_fixture

SPECS: dict[str, Any] = {
    "telegram_v2_2.txt": specs.V2_2, "telegram_v3.txt": specs.V3, "telegram_v4_2.txt": specs.V4,
    "telegram_v5.txt": specs.V5, "telegram_v5_two_mbus.txt": specs.V5,
    "telegram_fluvius_v171.txt": specs.BELGIUM_FLUVIUS, "telegram_fluvius_v171_alt.txt": specs.BELGIUM_FLUVIUS,
    # The recorded Sagemcom telegram is the decrypted text: read it with the cipher off.
    "telegram_sagemcom_t210_d_r.txt": {**specs.SAGEMCOM_T210_D_R, "general_global_cipher": False}, "telegram_iskra_ie.txt": specs.ISKRA_IE,
    "telegram_v5_eon_hu.txt": specs.EON_HUNGARY, "telegram_esy5q3da1004_v304.txt": specs.Q3D,
}


def fixture(name: str) -> bytes:
    return shared_fixture("p1", "dsmr_parser", name).read_bytes()


def telegram_part(raw: bytes) -> bytes:
    """The telegram proper: what the framer cuts (the EasyMeter files carry bytes after it)."""
    chunks = p1.P1Framer().feed(raw)
    return next(c.data for c in chunks if c.reason is None)


def oracle(name: str, raw: bytes) -> dict[str, tuple[Decimal, str | None]]:
    """What dsmr_parser reads, by OBIS code: each line its spec's patterns match, parsed by the
    spec's own value parser (its Telegram keeps one object per pattern, so lines are parsed here)."""
    text = raw.decode("ascii")
    TelegramParser(SPECS[name], apply_checksum_validation=True).parse(text)  # its CRC check passes
    out: dict[str, tuple[Decimal, str | None]] = {}
    for entry in SPECS[name]["objects"]:
        for line in re.finditer(entry["obis_reference"], text, re.MULTILINE | re.DOTALL):
            obj = entry["value_parser"].parse(line.group(0))
            code = re.match(r"\d+-\d+:\d+\.\d+\.\d+", line.group(0))
            assert code is not None
            if not isinstance(obj, (CosemObject, MBusObject)) or not isinstance(obj.value, Decimal):
                continue
            if isinstance(obj, MBusObject) and ":24.2." not in code.group(0):
                # DSMR 2.2's gas line (its value is under the code it names, 0-n:24.2.1, checked
                # in the M-Bus test) and Belgian peak demand (1-0:1.6.0, kept as text: no channel).
                continue
            out[code.group(0)] = (obj.value, obj.unit)
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_recorded_telegram_decodes_as_dsmr_parser_reads_it(name: str) -> None:
    raw = telegram_part(fixture(name))
    telegram = p1.decode(raw)
    ours: dict[str, tuple[Any, str | None]] = {code: (v, u) for code, v, u in telegram.values}
    for _, _, values in telegram.mbus:
        ours.update({code: (v, u) for code, v, u in values})
    expected = oracle(name, raw)
    assert expected, "the oracle read nothing"
    for code, (value, unit) in expected.items():
        if code.startswith("0-") and code.split(":")[1].startswith("24.2"):
            if value == 0 and unit is None:
                continue  # a vacant M-Bus channel (1970 capture time): no reading, on purpose
        assert code in ours, f"{code} missing"
        got, got_unit = ours[code]
        # Same digits (Decimal equality and the same exponent: 0.000 is not 0) and the same unit.
        assert (str(got), got_unit) == (str(value), unit), code


def test_the_crc_is_dsmr_parsers_and_a_flipped_byte_is_caught() -> None:
    raw = telegram_part(fixture("telegram_v5.txt"))
    bang = raw.rindex(b"!")
    assert p1.crc16(raw[:bang + 1]) == TelegramParser.crc16(raw[:bang + 1].decode())
    broken = raw.replace(b"1-0:1.8.1(000004.426", b"1-0:1.8.1(000004.427")
    with pytest.raises(p1.P1Error) as info:
        p1.decode(broken)
    assert info.value.reason == "crc"


def test_belgian_telegram_gives_tariffs_totals_voltages_and_both_mbus_meters_at_their_own_time() -> None:
    t = p1.decode(telegram_part(fixture("telegram_fluvius_v171.txt")))
    from drivers.obis_stream.p1 import tst
    raw = _raw(t.values, t.ts)
    got = canonical(raw, "dsmr_p1", Source.P1)
    assert got["energy_import_t1"] == Decimal("0.034") and got["energy_import_t2"] == Decimal("15.758")
    assert got["energy_import"] == Decimal("15.792")  # 0.034 + 15.758, exactly
    assert got["energy_export_t2"] == Decimal("0.011") and got["voltage_l1"] == Decimal("234.7")
    assert [(ch, when, vals) for ch, when, vals in t.mbus] == [
        (1, tst("200512134558S"), (("0-1:24.2.3", Decimal("112.384"), "m3"),)),
        (2, tst("200512134558S"), (("0-2:24.2.1", Decimal("872.234"), "m3"),)),
    ]


def _raw(values: Any, ts: Any) -> Any:
    from datetime import UTC, datetime

    from gateway.model.samples import RawObjects
    now = datetime.now(UTC)
    return RawObjects("E-1", ts or now, now, values)


def test_sagemcom_watt_hours_become_exact_kilowatt_hours() -> None:
    t = p1.decode(telegram_part(fixture("telegram_sagemcom_t210_d_r.txt")))
    got = canonical(_raw(t.values, t.ts), "dsmr_p1", Source.P1)
    assert got["energy_import"] == Decimal("6545.766")  # 6545766 Wh: no float noise
    assert got["power"] == Decimal("0.286")  # 286 W


async def test_recorded_telegrams_over_tcp_reach_the_right_meters_and_a_corrupt_one_is_dead_lettered() -> None:
    good = fixture("telegram_v5_two_mbus.txt")
    corrupt = good.replace(b"1-0:1.8.1(002130.115", b"1-0:1.8.1(002130.116")
    queue = [good, corrupt, b"\x00\xffnoise on the line\r\n", good]

    def source() -> bytes:
        return queue.pop(0) if queue else b""

    got = Got()
    async with TelegramServer(source, interval=0.05) as server:
        port = PortSection(name="p1-a", tcp=server.address)
        async with reading(P1, port, {0: "E-1", 2: "G-2"}, got) as reader:
            await eventually(lambda: not queue and reader.telegrams >= 2 and len(got.dead) >= 2)
    assert [o.meter_id for o in got.objects] == ["E-1", "G-2", "E-1", "G-2"]
    gas = got.objects[1]
    assert gas.ts == p1.tst("200426223001S") and gas.values == (("0-2:24.2.1", Decimal("246.138"), "m3"),)
    assert [(d.reason, d.meter_id, d.source) for d in got.dead] == [("crc", "E-1", "p1"), ("garbage", "E-1", "p1")]
    assert got.dead[0].payload.startswith("/ISK5") and "p1-a" in got.dead[0].where
    assert reader.errors == {"crc": 1, "garbage": 1}


