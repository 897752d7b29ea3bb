"""Which register reads one poll of a profile needs: the fewest requests that cover it.

Pure and cached per profile: profiles are frozen, so the plan is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from gateway.model.profiles import DeviceProfile, FlagSpec, Function, RegisterSpec


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One request: `count` registers of `function` from `address`, covering `registers` and `flags`."""

    function: Function
    address: int
    count: int
    registers: tuple[RegisterSpec, ...]
    flags: tuple[FlagSpec, ...] = ()

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.address + self.count


def plan_reads(profile: DeviceProfile, max_gap: int | None = None,
               max_registers: int | None = None) -> tuple[ReadBlock, ...]:
    """Merge the profile's registers (and status flags) into the fewest reads, holding (FC 03)
    before input (FC 04).

    Registers of one function merge while the hole between them is at most `profile.max_gap`
    registers (or `max_gap`, an endpoint's override) and the read stays within
    `profile.max_registers_per_request` (or the endpoint's lower `max_registers`). Greedy from
    the lowest address is optimal here, because any part of a feasible read is feasible too.
    """
    limit = profile.max_registers_per_request
    if max_registers is not None:
        limit = min(limit, max_registers)
    return _plan(profile, profile.max_gap if max_gap is None else max_gap, limit)


@lru_cache(maxsize=256)
def _plan(profile: DeviceProfile, max_gap: int, limit: int) -> tuple[ReadBlock, ...]:
    blocks: list[ReadBlock] = []
    items: list[RegisterSpec | FlagSpec] = [*profile.registers, *profile.flags]
    for function in (Function.HOLDING, Function.INPUT):
        specs = sorted((r for r in items if r.function is function), key=lambda r: (r.address, r.words))
        start = end = -1
        members: list[RegisterSpec | FlagSpec] = []
        for spec in specs:
            spec_end = spec.address + spec.words
            if spec.words > limit:
                what = spec.channel.value if isinstance(spec, RegisterSpec) else f"{spec.flag.value} flag"
                msg = (
                    f"profile {profile.name}: {what} at {spec.address:#06x} needs {spec.words} "
                    f"registers but max_registers_per_request is {limit}"
                )
                raise ValueError(msg)
            if members and spec.address - end <= max_gap and max(end, spec_end) - start <= limit:
                end = max(end, spec_end)
                members.append(spec)
                continue
            if members:
                blocks.append(_block(function, start, end, members))
            start, end, members = spec.address, spec_end, [spec]
        if members:
            blocks.append(_block(function, start, end, members))
    return tuple(blocks)


def _block(function: Function, start: int, end: int, members: list[RegisterSpec | FlagSpec]) -> ReadBlock:
    return ReadBlock(function, start, end - start,
                     tuple(m for m in members if isinstance(m, RegisterSpec)),
                     tuple(m for m in members if isinstance(m, FlagSpec)))
