"""Load object maps (OBIS code or VIF -> canonical channel) from TOML data files.

The coded protocols (DLMS/COSEM, M-Bus, P1, SML) identify a value by a code, not an address; a
family of meters' codes is a data file, as a Modbus meter's register map is. Shipped maps live in
gateway/profiles/objects/; a user adds one by dropping a file into a folder their protocol's section
names. A later file wins by name. Errors name the file, the entry and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from gateway.errors import ConfigError, ConfigProblem
from gateway.model.profiles import ObjectMap


def parse_object_map(text: str, source: str) -> ObjectMap:
    """One map from its file's text; ConfigError naming `source` and what is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("(file)", None, f"not valid TOML: {exc}")]) from exc
    try:
        return ObjectMap.from_dict(doc)
    except ValueError as exc:
        raise ConfigError(source, [ConfigProblem("objects", None, str(exc))]) from exc


def load_object_maps(extra_dirs: Iterable[Path] = ()) -> dict[str, ObjectMap]:
    """Shipped maps plus every *.toml in `extra_dirs`, by name; ConfigError lists every problem."""
    shipped = resources.files("gateway.profiles.objects")
    texts: list[tuple[str, str]] = [
        (f"object map {entry.name}", entry.read_text(encoding="utf-8"))
        for entry in sorted(shipped.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    ]
    problems: list[ConfigProblem] = []
    for folder in extra_dirs:
        if not folder.is_dir():
            problems.append(ConfigProblem(f"object map folder {folder}", None, "not a directory"))
            continue
        texts.extend((str(path), path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.toml")))
    found: dict[str, ObjectMap] = {}
    for source, text in texts:
        try:
            found_map = parse_object_map(text, source)
        except ConfigError as exc:
            problems.extend(ConfigProblem(f"{source}: {p.key}", p.line, p.message) for p in exc.problems)
            continue
        found[found_map.name] = found_map
    if problems:
        raise ConfigError("object maps", problems)
    return found
