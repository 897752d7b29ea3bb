"""Which register reads one poll of a profile needs: the fewest requests that cover it.

Pure and cached per profile: profiles are frozen, so the plan is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from gateway.model.profiles import DeviceProfile, Function, RegisterSpec


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: `count` registers of `function` from `address`, covering `registers`."""

    function: Function
    address: int
    count: int
    registers: tuple[RegisterSpec, ...]

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.address + self.count


def plan_reads(profile: DeviceProfile) -> tuple[ReadBlock, ...]:
    """Merge the profile's registers into the fewest reads, holding (FC 03) before input (FC 04).

    Registers of one function merge while the hole between them is at most `profile.max_gap`
    registers and the read stays within `profile.max_registers_per_request`. Greedy from the
    lowest address is optimal here, because any part of a feasible read is feasible too.
    """
    return _plan(profile)


@lru_cache(maxsize=256)
def _plan(profile: DeviceProfile) -> tuple[ReadBlock, ...]:
    limit = profile.max_registers_per_request
    blocks: list[ReadBlock] = []
    for function in (Function.HOLDING, Function.INPUT):
        specs = sorted((r for r in profile.registers if r.function is function), key=lambda r: r.address)
        start = end = -1
        members: list[RegisterSpec] = []
        for spec in specs:
            spec_end = spec.address + spec.words
            if spec.words > limit:
                msg = (
                    f"profile {profile.name}: {spec.channel.value} at {spec.address:#06x} needs {spec.words} "
                    f"registers but max_registers_per_request is {limit}"
                )
                raise ValueError(msg)
            if members and spec.address - end <= profile.max_gap and max(end, spec_end) - start <= limit:
                end = max(end, spec_end)
                members.append(spec)
                continue
            if members:
                blocks.append(ReadBlock(function, start, end - start, tuple(members)))
            start, end, members = spec.address, spec_end, [spec]
        if members:
            blocks.append(ReadBlock(function, start, end - start, tuple(members)))
    return tuple(blocks)
