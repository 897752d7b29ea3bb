"""Load Modbus device profiles (register maps) from TOML data files.

Shipped profiles live in gateway/profiles/; a user adds one by dropping a file in the
folder named by `modbus.profile_dirs` in the config. Errors name file, key and line.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.config.locate import Path as KeyPath
from gateway.config.locate import index_lines, line_of, problems_from_validation
from gateway.errors import ConfigError, ConfigProblem
from gateway.model.meters import Utility
from gateway.model.profiles import (
    ByteOrder,
    DataType,
    DeviceFlag,
    DeviceProfile,
    FlagSpec,
    Function,
    IdentifySpec,
    RegisterSpec,
)
from gateway.model.readings import UNITS, Channel, Kind
from gateway.model.units import conversion_factor


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegisterIn(_Strict):
    channel: Channel
    function: Function = Function.INPUT
    address: int = Field(ge=0, le=0xFFFF)
    type: DataType
    order: ByteOrder = ByteOrder.ABCD
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    kind: Kind = Kind.INSTANTANEOUS
    modulus: float | None = Field(default=None, gt=0)
    not_available: int | None = Field(default=None, description="Raw value the device sends for 'no value'")

    @model_validator(mode="after")
    def _unit_fits_channel(self) -> RegisterIn:
        conversion_factor(self.unit, self.channel)  # raises ValueError naming both
        return self


class FlagIn(_Strict):
    """A status bit, e.g. `[[flags]] function = "input", address = 14, bit = 0, flag = "tamper"`."""

    flag: DeviceFlag
    function: Function = Function.INPUT
    address: int = Field(ge=0, le=0xFFFF)
    bit: int = Field(ge=0, le=15)
    active: bool = Field(default=True, description="Bit value that means the flag is raised")


class IdentifyIn(_Strict):
    """A model-code register, e.g. `[[identify]] function = "holding", address = 0, values = [0xC0]`."""

    function: Function = Function.INPUT
    address: int = Field(ge=0, le=0xFFFF)
    values: list[int] = Field(min_length=1, description="What the 16-bit register reads on the models this "
                              "profile is for")


class ProfileMeta(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_\-]+$")
    manufacturer: str
    model: str
    document: str = Field(description="Published register map this profile follows, with version")
    utility: Utility = Utility.ELECTRICITY
    max_registers_per_request: int = Field(default=125, ge=1, le=125)
    max_gap: int = Field(default=8, ge=0, le=100)


class ProfileFile(_Strict):
    profile: ProfileMeta
    registers: list[RegisterIn] = Field(min_length=1)
    flags: list[FlagIn] = Field(default_factory=list)
    identify: list[IdentifyIn] = Field(default_factory=list)


def _cross_check(parsed: ProfileFile, index: dict[KeyPath, int]) -> list[ConfigProblem]:
    """Checks that span several keys, each problem with its key and line."""
    problems: list[ConfigProblem] = []
    seen: dict[Channel, int] = {}
    taken: dict[tuple[Function, int], int] = {}  # (function, register) -> the entry that reads it
    limit = parsed.profile.max_registers_per_request
    for i, reg in enumerate(parsed.registers):
        key: KeyPath = ("registers", i)
        if "unit" not in reg.model_fields_set and UNITS[reg.channel]:
            # An omitted unit used to mean "canonical": a meter sending W read as kW is off by 1000
            # with nothing to show for it, so the device's unit must be written down.
            msg = (f"{reg.channel.value} has no unit: write the unit the device sends "
                   f"(e.g. unit = \"{UNITS[reg.channel]}\")")
            problems.append(ConfigProblem(f"registers[{i}].unit", line_of(index, (*key, "channel")), msg))
        clash = next((taken[(reg.function, a)] for a in range(reg.address, reg.address + reg.type.words)
                      if (reg.function, a) in taken), None)
        if clash is not None:
            other = parsed.registers[clash]
            msg = (f"{reg.channel.value} ({reg.type.value} at {reg.address:#06x}) overlaps registers[{clash}] "
                   f"{other.channel.value} ({other.type.value} at {other.address:#06x}, {other.function.value})")
            problems.append(ConfigProblem(f"registers[{i}].address", line_of(index, (*key, "address")), msg))
        for a in range(reg.address, reg.address + reg.type.words):
            taken.setdefault((reg.function, a), i)
        if reg.channel in seen:
            msg = f"repeats channel {reg.channel.value} (first at registers[{seen[reg.channel]}])"
            problems.append(ConfigProblem(f"registers[{i}].channel", line_of(index, (*key, "channel")), msg))
        seen.setdefault(reg.channel, i)
        if reg.type.words > limit:
            msg = (f"{reg.channel.value} ({reg.type.value}) needs {reg.type.words} registers but "
                   f"max_registers_per_request is {limit}")
            problems.append(ConfigProblem(f"registers[{i}].type", line_of(index, (*key, "type")), msg))
        if reg.address + reg.type.words > 0x10000:
            msg = f"{reg.channel.value} ({reg.type.value}) runs past register 0xffff"
            problems.append(ConfigProblem(f"registers[{i}].address", line_of(index, (*key, "address")), msg))
    return problems


def parse_profile(text: str, source: str) -> DeviceProfile:
    """Parse one profile file's text; raise ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("(file)", None, f"not valid TOML: {exc}")]) from exc
    index = index_lines(text)
    try:
        parsed = ProfileFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_validation(exc, index)) from exc
    problems = _cross_check(parsed, index)
    if problems:
        raise ConfigError(source, problems)
    meta = parsed.profile
    return DeviceProfile(
        name=meta.name,
        manufacturer=meta.manufacturer,
        model=meta.model,
        document=meta.document,
        utility=meta.utility,
        max_registers_per_request=meta.max_registers_per_request,
        max_gap=meta.max_gap,
        flags=tuple(FlagSpec(f.flag, f.function, f.address, f.bit, f.active) for f in parsed.flags),
        identify=tuple(IdentifySpec(i.function, i.address, tuple(i.values)) for i in parsed.identify),
        registers=tuple(
            RegisterSpec(
                channel=r.channel, function=r.function, address=r.address, type=r.type,
                order=r.order, scale=r.scale, offset=r.offset, unit=r.unit, kind=r.kind,
                modulus=r.modulus, not_available=r.not_available,
            )
            for r in parsed.registers
        ),
    )


def load_profiles(extra_dirs: tuple[Path, ...] = ()) -> dict[str, DeviceProfile]:
    """Shipped profiles plus every *.toml in `extra_dirs` (a later file wins by name)."""
    found: dict[str, DeviceProfile] = {}
    problems: list[str] = []
    shipped = resources.files("gateway.profiles")
    texts: list[tuple[str, str]] = [
        (f"profile {entry.name}", entry.read_text(encoding="utf-8"))
        for entry in sorted(shipped.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    ]
    for folder in extra_dirs:
        if not folder.is_dir():
            problems.append(f"profile folder {folder}: not a directory")
            continue
        texts.extend((str(path), path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.toml")))
    all_problems: list[ConfigProblem] = []
    for source, text in texts:
        try:
            profile = parse_profile(text, source)
        except ConfigError as exc:
            all_problems.extend(
                ConfigProblem(f"{source}: {p.key}", p.line, p.message) for p in exc.problems
            )
            continue
        found[profile.name] = profile
    all_problems.extend(ConfigProblem(p, None, "cannot be read") for p in problems)
    if all_problems:
        raise ConfigError("profiles", all_problems)
    return found
