"""What a store holds that breaks the identifier rule (`meter-gateway db check`).

Stores written before the rule (gateway/model/identifiers.py) may hold meter ids, device
numbers, consumer numbers or tags that every entry point now refuses: a meter created as
``../../etc/passwd``, a consumer number with a space from an old configuration, a 10 kB tag.
This reads the registry, the meters and their assignments, through the `Store` interface (so
one implementation serves both stores) and lists each such value with what is wrong. It
changes nothing. Readings, events and dead letters are not read: their meter ids come from
the registry and the configuration, and a scan of every reading would take minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.model.identifiers import identifier_problem, shown, tags_problems
from storage.base import Store

__all__ = ["IdentifierFinding", "find_bad_identifiers", "find_shared_device_numbers"]

#: Meters read per query while walking the registry.
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class IdentifierFinding:
    """One stored value that breaks the rule: the row a person would look for, and what is wrong
    (naming the field and the value)."""

    where: str  # "meter 'M..1'" or "consumer 'C 1' (assigned to meter 'M-1')"
    problem: str  # "consumer_number 'C 1' contains a space"

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


async def find_bad_identifiers(store: Store) -> tuple[list[IdentifierFinding], int]:
    """Every meter id, device number, consumer number and tag in the store that breaks the rule,
    and the number of meters read. A value shared by many rows (a consumer number) is listed once."""
    found: list[IdentifierFinding] = []
    seen: set[tuple[str, str]] = set()

    def check(where: str, field: str, value: str | None) -> None:
        problem = None if value is None else identifier_problem(value)
        if value is None or problem is None or (field, value) in seen:
            return
        seen.add((field, value))
        found.append(IdentifierFinding(where, f"{field} {shown(value)} {problem}"))

    meters = 0
    after: str | None = None
    while True:
        page = await store.list_meters(limit=_PAGE, after=after)
        for m in page:
            where = f"meter {shown(m.meter_id)}"
            check(where, "meter_id", m.meter_id)
            check(where, "device_number", m.device_number)
            check(where, "consumer_number", m.consumer_number)
            found += [IdentifierFinding(where, problem) for problem in tags_problems(m.tags)]
        meters += len(page)
        if len(page) < _PAGE:
            break
        after = page[-1].meter_id
    for a in await store.assignments(reads=False):
        check(f"consumer {shown(a.consumer_number)} (assigned to meter {shown(a.meter_id)})", "consumer_number",
              a.consumer_number)
    return found, meters


async def find_shared_device_numbers(store: Store) -> list[IdentifierFinding]:
    """Each meter whose device number another meter of its utility holds: kept by the upgrade that
    made device numbers unique per utility (the new ones are refused). One finding per such meter."""
    found = []
    for shared in await store.shared_device_numbers():
        holder, *others = shared.meter_ids
        for meter_id in others:
            found.append(IdentifierFinding(
                f"meter {shown(meter_id)}",
                f"device_number {shown(shared.device_number)} ({shared.utility.value}) is also on meter {shown(holder)}, "
                f"which holds it; device numbers are unique per utility: give one of them another "
                f"(PATCH /v1/meters/{meter_id} or /v1/meters/{holder})"))
    return found
