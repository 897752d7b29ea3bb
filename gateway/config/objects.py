"""Object maps (OBIS code or VIF -> canonical channel) for the configuration's checks: the model's
reader (gateway/model/objectmaps.py) with its problems as a ConfigError naming each file and entry.

The coded protocols (DLMS/COSEM, M-Bus, P1, SML) identify a value by a code, not an address; a
family of meters' codes is a data file, as a Modbus meter's register map is. Shipped maps live in
gateway/profiles/objects/; a user adds one by dropping a file into a folder their protocol's section
names. A later file wins by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gateway.errors import ConfigError, ConfigProblem
from gateway.model.objectmaps import read_object_maps
from gateway.model.profiles import ObjectMap


def load_object_maps(extra_dirs: Iterable[Path] = ()) -> dict[str, ObjectMap]:
    """Shipped maps plus every *.toml in `extra_dirs`, by name; ConfigError lists every problem."""
    found, problems = read_object_maps(extra_dirs)
    if problems:
        raise ConfigError("object maps", [ConfigProblem(p, None, "cannot be used") for p in problems])
    return found
