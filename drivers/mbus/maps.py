"""The M-Bus object maps: shipped ones (gateway/profiles/objects/mbus_*.toml) and a user's folders.

The same data-file shape as every coded protocol's (`ObjectMap.from_dict`); read here because a
driver may not import the configuration stage (gateway.config.objects does the same for the
runtime). Cached by folder list: the maps are immutable.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path

from gateway.model.profiles import ObjectMap


@functools.cache
def object_maps(dirs: tuple[Path, ...] = ()) -> dict[str, ObjectMap]:
    """Every map by name (a later folder's wins); ValueError naming the file for a bad one."""
    texts = [(e.name, e.read_text(encoding="utf-8")) for e in resources.files("gateway.profiles.objects").iterdir()
             if e.name.endswith(".toml")]
    for folder in dirs:
        texts.extend((str(p), p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.toml")))
    out: dict[str, ObjectMap] = {}
    for name, text in texts:
        try:
            found = ObjectMap.from_dict(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            msg = f"object map {name}: {exc}"
            raise ValueError(msg) from None
        out[found.name] = found
    return out


__all__ = ["object_maps"]
