"""Find the line of a key path in TOML text, so errors can say "meters[3].profile at line 41".

tomllib gives values, not positions. This walks the text once, tracking table headers,
arrays of tables and multi-line values, and records the line where each key path
starts. Good enough for error messages; it never decides what a value is.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from gateway.errors import ConfigProblem

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'))*)\s*=""")

Path = tuple[str | int, ...]


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_\-]+|"[^"]*"|'[^']*'""", text)
    return [p.strip("\"'") for p in parts]


def index_lines(text: str) -> dict[Path, int]:
    """Map every key path (and table / array-of-tables element) to its 1-based line."""
    lines: dict[Path, int] = {}
    counters: dict[tuple[str | int, ...], int] = {}
    table: Path = ()
    depth = 0  # bracket depth of a multi-line array or inline table
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth == 0:
            header = _HEADER.match(line)
            if header:
                keys = _split_dotted(header.group(2))
                if header.group(1) == "[[":
                    # Array of tables: parent path resolved against earlier elements.
                    base = _resolve(tuple(keys[:-1]), counters)
                    arr = (*base, keys[-1])
                    index = counters.get(arr, -1) + 1
                    counters[arr] = index
                    table = (*arr, index)
                    lines.setdefault(arr, number)
                else:
                    table = _resolve(tuple(keys), counters)
                lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                path = (*table, *_split_dotted(key.group(1)))
                lines.setdefault(path, number)
                value = line[key.end():]
                for quote in ('"""', "'''"):
                    if value.count(quote) == 1:
                        in_string = quote
                depth += _bracket_balance(value)
                continue
        else:
            depth += _bracket_balance(line)
    return lines


def _resolve(keys: tuple[str, ...], counters: dict[tuple[str | int, ...], int]) -> Path:
    """Insert the current element index after any key that names an array of tables."""
    out: list[str | int] = []
    for k in keys:
        out.append(k)
        arr = tuple(out)
        if arr in counters:
            out.append(counters[arr])
    return tuple(out)


def _bracket_balance(text: str) -> int:
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'[^\']*\'', "", text)  # ignore brackets in strings
    text = text.split("#", 1)[0]
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def line_of(index: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    for end in range(len(path), 0, -1):
        found = index.get(tuple(path[:end]))
        if found is not None:
            return found
    return None


def dotted(path: Path) -> str:
    """('meters', 3, 'profile') -> 'meters[3].profile'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def problems_from_validation(exc: ValidationError, index: dict[Path, int], prefix: Path = ()) -> list[ConfigProblem]:
    """Turn a pydantic ValidationError into ConfigProblems naming key and line."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = (*prefix, *loc)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif "input" in err and err["type"] not in ("model_type", "dict_type"):
            got = repr(err["input"])
            if len(got) > 120:  # a 10 kB value would bury the message
                got = f"{got[:100]}... ({len(got)} characters)"
            message = f"{message} (got {got})"
        problems.append(ConfigProblem(dotted(path) or "(top level)", line_of(index, path), message))
    return problems
