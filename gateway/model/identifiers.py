"""The one rule for identifiers: meter ids, consumer numbers, device numbers (and tag keys).

An identifier is **1 to 64 characters of ``A-Z a-z 0-9 . _ : -``, starting with a letter or
a digit, and never containing ``..``**. Every entry point applies it: the configuration file
(``[[meters]]``), the API (bodies and the ``{meter_id}`` / ``{consumer_number}`` path
parameters), the CSV import (per row) and the ``{meter_id}`` part of an MQTT topic (a topic
whose part breaks it names no meter: an ``unknown_meter`` dead letter). ``meter-gateway db
check`` lists what an older store holds that breaks it.

Why a short list of allowed characters rather than a list of forbidden ones: an id travels
into URL paths (``/v1/meters/{meter_id}``), MQTT topics (``payg/{meter_id}/balance``), CSV
cells, log lines, file names of exports and other systems' keys, and each of those has its
own special characters. What the list keeps out, and why:

- ``/``: a level separator in URLs and topics; ``POST /v1/meters`` once created
  ``../../etc/passwd``, which no route could reach afterwards;
- ``..`` anywhere, and a leading ``.``: a parent or hidden directory once an id becomes a path;
- ``+`` ``#`` (MQTT wildcards), ``*`` ``?`` (shell and glob patterns), ``%`` (URL escapes,
  SQL LIKE), ``$`` (MQTT system topics), quotes, ``,`` ``;`` ``=`` (CSV cells, tag pairs);
- whitespace and control characters: invisible, and trimmed differently by every system;
- non-ASCII letters: look-alikes (Cyrillic ``М-1`` is not ``M-1``) and Unicode normalisation;
- a leading ``-``, ``_`` or ``:``: taken for a command-line option or a private name.

What it keeps: the meter numbers printed on devices and the ids the simulators and tests
use (``M-5678``, ``P-00003``, ``C-1007``, ``SN-0001``, ``SDM630-2211-0457``, ``edge.1:7``).

Tags are free text for people (``feeder = "F7"``): a meter has at most `MAX_TAGS` of them;
a key follows the identifier rule, a value is at most `MAX_TAG_VALUE` printable characters
(no control characters, no NUL, no lone surrogates).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ALLOWED",
    "MAX_LENGTH",
    "MAX_TAGS",
    "MAX_TAG_VALUE",
    "PATTERN",
    "RULE",
    "identifier_error",
    "identifier_problem",
    "shown",
    "tag_value_problem",
    "tags_problems",
]

#: Longest identifier, in characters (all ASCII, so also in bytes).
MAX_LENGTH = 64
#: Every character an identifier may hold.
ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
#: The rule as a regular expression without lookarounds, so that JSON Schema (the OpenAPI
#: document), pydantic's Rust engine and Python's `re` read it alike; the length is separate.
PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_:-]*(?:\.[A-Za-z0-9_:-]+)*\.?$"
#: The rule in words, for messages.
RULE = f"1-{MAX_LENGTH} characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit, no '..'"

#: Most tags on one meter.
MAX_TAGS = 50
#: Longest tag value, in characters.
MAX_TAG_VALUE = 256

_NAMED = {"/": "'/' (a path and topic separator)", "+": "the MQTT wildcard '+'", "#": "the MQTT wildcard '#'",
          "*": "the wildcard '*'", "?": "the wildcard '?'", "%": "'%' (URL escapes)"}


def _character(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    if c == " ":
        return "a space"
    if "\ud800" <= c <= "\udfff":
        return f"the lone surrogate U+{ord(c):04X} (not Unicode text)"
    if c.isspace():
        return f"whitespace U+{ord(c):04X}"
    if not c.isprintable():
        return f"the control character U+{ord(c):04X}"
    return repr(c)


def identifier_problem(value: str) -> str | None:
    """What is wrong with `value` as an identifier (e.g. "contains '/' (...)"), or None if nothing."""
    if not value:
        return "is empty"
    if len(value) > MAX_LENGTH:
        return f"is {len(value)} characters long, more than {MAX_LENGTH}"
    for c in value:
        if c not in ALLOWED:
            return f"contains {_character(c)}"
    if ".." in value:
        return "contains '..'"
    if not value[0].isalnum():
        return f"starts with {value[0]!r}, not a letter or digit"
    return None


def shown(value: str, limit: int = 40) -> str:
    """`value` quoted for a message, cut short so that a 10 kB value does not fill the screen."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"


def identifier_error(field: str, value: str) -> str | None:
    """A message naming the field, the value and what is wrong, or None if `value` is a valid identifier.

    E.g. ``identifier_error("meter_id", "../x")`` -> "meter_id '../x' contains '/' (a path and
    topic separator); an identifier is 1-64 characters of ...".
    """
    problem = identifier_problem(value)
    return None if problem is None else f"{field} {shown(value)} {problem}; an identifier is {RULE}"


def tag_value_problem(value: str) -> str | None:
    """What is wrong with `value` as a tag value, or None."""
    if len(value) > MAX_TAG_VALUE:
        return f"is {len(value)} characters long, more than {MAX_TAG_VALUE}"
    for c in value:
        if not c.isprintable() and c != " ":
            return f"contains {_character(c)}"
    return None


def tags_problems(tags: Mapping[str, str], field: str = "tags") -> list[str]:
    """Every problem of a meter's tags, each naming the tag: too many, a bad key, a bad value."""
    problems = []
    if len(tags) > MAX_TAGS:
        problems.append(f"{field}: {len(tags)} tags, more than {MAX_TAGS}")
    for key, value in tags.items():
        key_problem = identifier_error(f"{field} key", key)
        if key_problem is not None:
            problems.append(key_problem)
        value_problem = tag_value_problem(value)
        if value_problem is not None:
            problems.append(f"{field}.{key}: the value {value_problem}")
    return problems
