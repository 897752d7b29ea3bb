"""The object maps P1 and SML meters name: the shipped ones (gateway/profiles/objects) and those in
the section's object_dirs. The data-file loader proper is gateway/config/objects.py, which the
import contract keeps out of drivers' reach; this is the same reading through the model's
`ObjectMap.from_dict`, cached per folder list, for the spec's checks and facts."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from gateway.model.profiles import ObjectMap


@functools.cache
def _load(dirs: tuple[Path, ...]) -> tuple[dict[str, ObjectMap], tuple[str, ...]]:
    texts = [(f"object map {e.name}", e.read_text(encoding="utf-8"))
             for e in sorted(resources.files("gateway.profiles.objects").iterdir(), key=lambda e: e.name)
             if e.name.endswith(".toml")]
    problems: list[str] = []
    for folder in dirs:
        if not folder.is_dir():
            problems.append(f"object map folder {folder}: not a directory")
            continue
        texts.extend((str(p), p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.toml")))
    found: dict[str, ObjectMap] = {}
    for source, text in texts:
        try:
            m = ObjectMap.from_dict(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            problems.append(f"{source}: {exc}")
            continue
        found[m.name] = m
    return found, tuple(problems)


def object_maps(dirs: Sequence[Path]) -> tuple[dict[str, ObjectMap], tuple[str, ...]]:
    """Maps by name (a later folder wins), and the problems found reading them."""
    return _load(tuple(dirs))


__all__ = ["object_maps"]
