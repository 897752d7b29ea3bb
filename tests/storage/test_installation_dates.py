"""The registry's installation dates as the gateway's plausibility floors (issue 19 item 1): one
statement reads those of the gateway's meters, on every backend; the floor is the later of the
registry's date and the configuration's; a change swaps a new Bounds in whole; a store that does
not answer leaves the floors read last."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.normalise.normaliser import Normaliser
from gateway.normalise.plausibility import Bounds
from gateway.runtime.installed import InstallationFloors, later
from storage.base import Store
from tests.storage.backends import open_backend
from tests.storage.samples import meter

AT = datetime(2026, 3, 2, tzinfo=UTC)
MAY, JUNE, JULY = (datetime(2025, m, 1, tzinfo=UTC) for m in (5, 6, 7))


async def test_the_dates_of_the_asked_meters_that_have_one_in_one_statement(store: Store) -> None:
    await store.create_meters([meter("A-1", installed_at=MAY), meter("A-2", installed_at=None),
                               meter("A-3", installed_at=JUNE), meter("A-4", installed_at=JULY)], at=AT)
    assert await store.installation_dates(["A-1", "A-2", "A-3", "Z-9"]) == {"A-1": MAY, "A-3": JUNE}
    assert await store.installation_dates([]) == {}


def test_the_later_of_the_configured_and_the_registry_date_is_the_floor() -> None:
    assert later({"A": JUNE, "B": JUNE}, {"A": MAY, "B": JULY, "C": MAY}) == {"A": JUNE, "B": JULY, "C": MAY}


async def test_the_floors_follow_the_registry_and_keep_the_configured_dates(store: Store) -> None:
    await store.create_meters([meter("A-1", installed_at=None), meter("A-2", installed_at=None)], at=AT)
    normaliser = Normaliser({}, {}, bounds=Bounds(installed={"A-2": JUNE}))
    floors = InstallationFloors(normaliser, ["A-1", "A-2"], every=30)
    first = normaliser.bounds
    assert await floors.refresh(store)
    assert normaliser.bounds is first  # nothing changed: the same Bounds

    await store.update_meter("A-1", {"installed_at": JULY}, at=AT)
    await store.update_meter("A-2", {"installed_at": MAY}, at=AT)  # before the configured date: it stays
    assert await floors.refresh(store)
    assert dict(normaliser.bounds.installed) == {"A-1": JULY, "A-2": JUNE}
    assert dict(floors.registry) == {"A-1": JULY, "A-2": MAY}
    assert dict(first.installed) == {"A-2": JUNE}  # swapped in whole, the old one untouched
    assert normaliser.bounds.floor("A-1") == JULY and normaliser.bounds.ts_floor == first.ts_floor

    await store.update_meter("A-1", {"installed_at": None}, at=AT)  # cleared through the API
    await store.update_meter("A-2", {"installed_at": JULY}, at=AT)
    assert await floors.refresh(store)
    assert dict(normaliser.bounds.installed) == {"A-2": JULY}


async def test_a_store_that_does_not_answer_leaves_the_floors_read_last(store_target: tuple[str, str]) -> None:
    opened = await open_backend(*store_target)
    await opened.migrate()
    await opened.create_meters([meter("A-1", installed_at=JUNE)], at=AT)
    normaliser = Normaliser({}, {})
    floors = InstallationFloors(normaliser, ["A-1"], every=30)
    assert await floors.refresh(opened)
    await opened.close()
    assert not await floors.refresh(opened)
    assert dict(normaliser.bounds.installed) == {"A-1": JUNE}
