"""Schema migrations shared by both stores: numbered .sql files shipped as package data.

A backend keeps its migrations in ``storage/<backend>/schema/NNNN_name.sql``. They are
applied in version order, each in its own transaction, and recorded in
``schema_migrations``; they are forward-only (there is no "down"), so a version once
released is never edited, only followed by a new file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from gateway.errors import SinkError

_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its version (the file's number), name and SQL text."""

    version: int
    name: str
    sql: str


def load_migrations(package: str) -> list[Migration]:
    """Every ``schema/NNNN_name.sql`` of `package`, ordered by version.

    Raises SinkError when a file is misnamed or two files share a version, because
    either would make the applied order ambiguous.
    """
    folder = resources.files(package).joinpath("schema")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            msg = f"migration {package}/schema/{entry.name}: name must look like 0001_init.sql"
            raise SinkError(msg)
        version = int(match["version"])
        if version in found:
            msg = f"migration {package}/schema/{entry.name}: version {version} is already used by {found[version].name}"
            raise SinkError(msg)
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    if not found:
        msg = f"no migrations found in {package}/schema (is the package data installed?)"
        raise SinkError(msg)
    return [found[v] for v in sorted(found)]


def pending(migrations: list[Migration], applied: set[int]) -> list[Migration]:
    """The migrations not yet recorded as applied, in order."""
    return [m for m in migrations if m.version not in applied]
