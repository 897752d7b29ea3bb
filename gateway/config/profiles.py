"""Load Modbus device profiles (register maps) from TOML data files.

Shipped profiles live in gateway/profiles/; a user adds one by dropping a file in the
folder named by `modbus.profile_dirs` in the config. Errors name file, key and line.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.config.locate import index_lines, problems_from_validation
from gateway.errors import ConfigError, ConfigProblem
from gateway.model.meters import Utility
from gateway.model.profiles import ByteOrder, DataType, DeviceProfile, Function, RegisterSpec
from gateway.model.readings import Channel, Kind
from gateway.normalise.units import conversion_factor


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

    @model_validator(mode="after")
    def _unit_fits_channel(self) -> RegisterIn:
        conversion_factor(self.unit, self.channel)  # raises ValueError naming both
        return self


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

    @model_validator(mode="after")
    def _no_overlap(self) -> ProfileFile:
        seen: dict[Channel, int] = {}
        for i, reg in enumerate(self.registers):
            if reg.channel in seen:
                msg = f"registers[{i}] repeats channel {reg.channel.value} (first at registers[{seen[reg.channel]}])"
                raise ValueError(msg)
            seen[reg.channel] = i
        return self


def parse_profile(text: str, source: str) -> DeviceProfile:
    """Parse one profile file's text; raise ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("(file)", None, f"not valid TOML: {exc}")]) from exc
    try:
        parsed = ProfileFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_from_validation(exc, index_lines(text))) from exc
    meta = parsed.profile
    return DeviceProfile(
        name=meta.name,
        manufacturer=meta.manufacturer,
        model=meta.model,
        document=meta.document,
        utility=meta.utility,
        max_registers_per_request=meta.max_registers_per_request,
        max_gap=meta.max_gap,
        registers=tuple(
            RegisterSpec(
                channel=r.channel, function=r.function, address=r.address, type=r.type,
                order=r.order, scale=r.scale, offset=r.offset, unit=r.unit, kind=r.kind,
                modulus=r.modulus,
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
