"""plan_reads: the fewest register reads that cover a profile."""

from __future__ import annotations

from dataclasses import replace

import pytest

from drivers.modbus import ReadBlock, plan_reads
from gateway.model.meters import Utility
from gateway.model.profiles import DataType, DeviceFlag, DeviceProfile, FlagSpec, Function, RegisterSpec
from gateway.model.readings import Channel

CHANNELS = list(Channel)


def make_profile(
    regs: list[tuple[Function, int, DataType]], *, max_per_request: int = 125, max_gap: int = 8
) -> DeviceProfile:
    return DeviceProfile(
        name="t", manufacturer="t", model="t", document="t", utility=Utility.ELECTRICITY,
        registers=tuple(RegisterSpec(CHANNELS[i], fn, addr, dt) for i, (fn, addr, dt) in enumerate(regs)),
        max_registers_per_request=max_per_request, max_gap=max_gap,
    )


def spans(blocks: tuple[ReadBlock, ...]) -> list[tuple[str, int, int]]:
    return [(b.function.value, b.address, b.count) for b in blocks]


IN, HR = Function.INPUT, Function.HOLDING
F32, U16, U64 = DataType.FLOAT32, DataType.UINT16, DataType.UINT64


@pytest.mark.parametrize(
    ("regs", "kw", "expected"),
    [
        # contiguous registers, listed out of order: one read
        ([(IN, 4, F32), (IN, 0, F32), (IN, 2, F32)], {}, [("input", 0, 6)]),
        # a hole of exactly max_gap merges; one more register of hole does not
        ([(IN, 0, F32), (IN, 10, F32)], {"max_gap": 8}, [("input", 0, 12)]),
        ([(IN, 0, F32), (IN, 11, F32)], {"max_gap": 8}, [("input", 0, 2), ("input", 11, 2)]),
        ([(IN, 0, F32), (IN, 2, F32)], {"max_gap": 0}, [("input", 0, 4)]),
        # the per-request limit splits a long run
        ([(IN, a, F32) for a in range(0, 12, 2)], {"max_per_request": 4},
         [("input", 0, 4), ("input", 4, 4), ("input", 8, 4)]),
        ([(IN, 0, U16), (IN, 1, U64)], {"max_per_request": 4}, [("input", 0, 1), ("input", 1, 4)]),
        # different functions never share a read; holding first
        ([(IN, 0, F32), (HR, 0, F32), (HR, 2, U16)], {}, [("holding", 0, 3), ("input", 0, 2)]),
        # overlapping registers (two channels on one word) do not widen the read
        ([(IN, 0, F32), (IN, 1, U16)], {}, [("input", 0, 2)]),
    ],
)
def test_plan_reads(regs: list[tuple[Function, int, DataType]], kw: dict[str, int], expected: list[object]) -> None:
    blocks = plan_reads(make_profile(regs, **kw))
    assert spans(blocks) == expected
    assert sum(len(b.registers) for b in blocks) == len(regs)
    for block in blocks:
        assert all(block.address <= r.address and r.address + r.words <= block.end for r in block.registers)


def test_plan_is_computed_once_per_profile() -> None:
    profile = make_profile([(IN, 0, F32)])
    assert plan_reads(profile) is plan_reads(profile)


def test_register_wider_than_the_request_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"profile t: energy_import at 0x0000 needs 4 registers but max_registers_per_request is 2"):
        plan_reads(make_profile([(IN, 0, U64)], max_per_request=2))


def test_status_flags_are_read_with_the_registers() -> None:
    profile = replace(make_profile([(IN, 0, F32)]), flags=(FlagSpec(DeviceFlag.TAMPER, IN, 5, 0),
                                                          FlagSpec(DeviceFlag.TAMPER, HR, 100, 2)))
    blocks = plan_reads(profile)
    assert spans(blocks) == [("holding", 100, 1), ("input", 0, 6)]
    assert [len(b.flags) for b in blocks] == [1, 1] and [len(b.registers) for b in blocks] == [0, 1]


def test_an_endpoint_may_override_the_gap() -> None:
    profile = make_profile([(IN, 0, F32), (IN, 20, F32)], max_gap=8)
    assert spans(plan_reads(profile)) == [("input", 0, 2), ("input", 20, 2)]
    assert spans(plan_reads(profile, max_gap=18)) == [("input", 0, 22)]


@pytest.mark.parametrize(("name", "expected"), [
    ("generic", [("input", 0, 15)]),  # 7 float32 channels and the status word
    ("sdm630", [("input", 0x00, 12), ("input", 0x34, 24)]),
    ("sdm120", [("input", 0x00, 14), ("input", 0x1E, 2), ("input", 0x46, 6)]),
    ("abb_b23", [("holding", 0x5000, 8), ("holding", 0x5B00, 59)]),
    ("em24", [("input", 0x00, 94)]),
])
def test_shipped_profiles_plan(name: str, expected: list[tuple[str, int, int]]) -> None:
    from gateway.config.profiles import load_profiles

    profile = load_profiles()[name]
    assert spans(plan_reads(profile)) == expected
    assert all(b.count <= profile.max_registers_per_request for b in plan_reads(profile))
