"""Text every store can hold: no NUL (PostgreSQL text cannot), no lone surrogate (UTF-8 cannot
encode one, so neither the spool nor either store can).

JSON carries both as escapes ("\\u0000", "\\ud800") and Python decodes them into a `str` without
complaint, so a payload's text fields are checked where they enter (`unstorable_at`, at
normalise), and text kept only for people to read (a dead letter) is escaped (`storable`).
"""

from __future__ import annotations

import re

__all__ = ["storable", "unstorable_at"]

# A Python str holds an astral character as one code point, never as a surrogate pair: any
# code point in D800-DFFF is a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_at(text: str) -> int | None:
    """Index of the first NUL or lone surrogate in `text`, None if there is none."""
    found = _UNSTORABLE.search(text)
    return None if found is None else found.start()


def _escape(found: re.Match[str]) -> str:
    return f"\\u{ord(found.group()):04x}"


def storable(text: str) -> str:
    """`text` with each NUL and lone surrogate written as its escape (``\\u0000``, ``\\ud800``);
    `text` itself (the same object) when it holds none."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(_escape, text)
