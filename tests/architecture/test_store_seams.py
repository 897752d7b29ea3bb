"""The one SQL layer (issue 23, item 4): the stores' shared code lives in storage/sql/, what stays
per engine is only what differs, and the API sees a store as a Reader and a Registry."""

from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path

from storage import base
from tests.architecture.imports import ROOT

#: storage/sqlite/ + storage/timescale/ together, in lines (3,437 before storage/sql/ took their shared half).
#: 1,900 until SQLite dropped readings_meter_ts (issue 26): its per-channel reads of a meter (a merge of
#: readings_cover ranges, a probe per channel) are SQLite's alone, TimescaleDB keeps the plain SQL.
ENGINE_LINES = 1_950
ENGINES = ("storage/sqlite", "storage/timescale")


def _norm(line: str) -> str:
    """The line with placeholders and connection names made alike (seams.md appendix A.3)."""
    line = re.sub(r"%\(\w+\)s|%s|\?", "?", line.strip())
    line = re.sub(r"\b(db|conn|cur)\b", "c", line)
    return re.sub(r"rows\.(us|utc|opt_us|opt_utc|dt)\b", "rows.T", line)


def _lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8").splitlines()
    return [_norm(x) for x in text if x.strip() and not x.strip().startswith("#")]


def test_the_engines_share_no_run_of_six_equal_lines() -> None:
    sqlite, timescale = (ROOT / e for e in ENGINES)
    runs = {}
    for a in sorted(sqlite.glob("*.py")):
        b = timescale / a.name
        if b.exists() and a.stat().st_size and b.stat().st_size:
            matcher = difflib.SequenceMatcher(None, _lines(a), _lines(b), autojunk=False)
            runs[a.name] = [m.size for m in matcher.get_matching_blocks() if m.size >= 6]
    assert {name: found for name, found in runs.items() if found} == {}


def test_the_engines_keep_only_what_differs() -> None:
    total = sum(p.read_bytes().count(b"\n") for e in ENGINES for p in (ROOT / e).glob("*.py"))
    assert total <= ENGINE_LINES


def test_a_store_is_a_sink_a_reader_and_a_registry() -> None:
    parts = [getattr(base, name, None) for name in ("Sink", "Reader", "Registry")]
    assert None not in parts
    assert set(parts) <= set(base.Store.__mro__)


def test_the_api_sees_a_reader_and_a_registry_only() -> None:
    wrong = []
    for path in sorted((ROOT / "api").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "storage.base":
                wrong += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                          if a.name not in ("Reader", "Registry")]
            elif isinstance(node, ast.ImportFrom) and re.match(r"storage\.(sql|sqlite|timescale)\b", node.module or ""):
                wrong.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert wrong == []
