"""The object maps (code -> channel) of the coded protocols, read from their data files: the shipped
ones in gateway/profiles/objects/ and those of a user's folders. One reader for every stage that needs
them (the configuration's checks, each coded driver's spec, the tests): a driver may not import the
configuration stage, so it lives here beside `ObjectMap`. Cached per folder list: maps are immutable."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from gateway.model.profiles import ObjectMap


@functools.cache
def _read(dirs: tuple[Path, ...]) -> tuple[dict[str, ObjectMap], tuple[str, ...]]:
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
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{source}: not valid TOML: {exc}")
            continue
        except ValueError as exc:
            problems.append(f"{source}: {exc}")
            continue
        found[m.name] = m
    return found, tuple(problems)


def read_object_maps(dirs: Iterable[Path] = ()) -> tuple[dict[str, ObjectMap], tuple[str, ...]]:
    """Maps by name (a later folder's wins) and the problems found reading them, each naming its file."""
    found, problems = _read(tuple(dirs))
    return dict(found), problems


def object_maps(dirs: Iterable[Path] = ()) -> dict[str, ObjectMap]:
    """Maps by name; ValueError listing every problem (each names its file and entry)."""
    found, problems = read_object_maps(dirs)
    if problems:
        raise ValueError("; ".join(problems))
    return found


__all__ = ["object_maps", "read_object_maps"]
