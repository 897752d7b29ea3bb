"""MQTT topic templates: "payg/{meter_id}/balance" -> the subscription and the meter id of a topic."""

from __future__ import annotations

import re

from gateway.model.identifiers import identifier_error, identifier_problem

__all__ = ["TopicTemplate"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TopicTemplate:
    """A topic with placeholders, e.g. "payg/{meter_id}/balance".

    Each level that holds a placeholder becomes "+" in the subscription ("payg/+/balance");
    `match()` reads the placeholders back out of a received topic. A level may mix text and a
    placeholder ("site/meter-{meter_id}"); "{meter_id}" must appear exactly once. A topic whose
    {meter_id} part breaks the identifier rule (gateway/model/identifiers.py: "payg/../balance",
    "payg/M 1/balance", a 10 kB level) does not match: it names no meter.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        levels = template.split("/")
        names = _PLACEHOLDER.findall(template)
        problems = []
        if names.count("meter_id") != 1:
            problems.append("must contain {meter_id} exactly once")
        if len(set(names)) != len(names):
            problems.append("repeats a placeholder")
        if any(c in template for c in "+#") or template.startswith("$"):
            problems.append("must not contain MQTT wildcards (+, #) or start with $")
        if any(not level for level in levels):
            problems.append("has an empty level")
        if problems:
            msg = f"topic template {template!r}: " + "; ".join(problems)
            raise ValueError(msg)
        self.subscription = "/".join("+" if _PLACEHOLDER.search(level) else level for level in levels)
        parts = []
        for level in levels:
            pos, pattern = 0, ""
            for m in _PLACEHOLDER.finditer(level):
                pattern += re.escape(level[pos : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
                pos = m.end()
            parts.append(pattern + re.escape(level[pos:]))
        self._regex = re.compile("/".join(parts))

    def match(self, topic: str) -> dict[str, str] | None:
        """The placeholder values in `topic`, or None if it does not fit the template."""
        m = self._regex.fullmatch(topic)
        if m is None or identifier_problem(m["meter_id"]) is not None:
            return None
        return m.groupdict()

    def meter_id(self, topic: str) -> str | None:
        fields = self.match(topic)
        return fields["meter_id"] if fields else None

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.template))

    def render(self, **values: str) -> str:
        """The topic for these placeholder values, e.g. render(meter_id="M-1") -> "payg/M-1/command".

        Raises ValueError if a placeholder has no value, a value would change the topic's levels, or the
        meter id breaks the identifier rule.
        """
        missing = [name for name in self.placeholders if name not in values]
        if missing:
            msg = f"topic template {self.template!r}: no value for {', '.join(missing)}"
            raise ValueError(msg)
        for name in self.placeholders:
            value = values[name]
            if not value or any(c in value for c in "/+#"):
                msg = f"topic template {self.template!r}: {name}={value!r} must be non-empty without '/', '+' or '#'"
                raise ValueError(msg)
        problem = identifier_error("meter_id", values["meter_id"])
        if problem is not None:
            msg = f"topic template {self.template!r}: {problem}"
            raise ValueError(msg)
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.template)

    def __repr__(self) -> str:
        return f"TopicTemplate({self.template!r})"
