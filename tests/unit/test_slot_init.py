"""slot_init's __init__ builds the same objects as the dataclass-generated one it replaces."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from gateway.model import Channel, Kind, Quality, Reading, Source, Status
from gateway.model.slotinit import slot_init

TS = datetime(2026, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Generated:
    a: int
    b: str = "b"
    c: float | None = dataclasses.field(default=None, compare=False)


@slot_init
@dataclasses.dataclass(frozen=True, slots=True)
class Fast:
    a: int
    b: str = "b"
    c: float | None = dataclasses.field(default=None, compare=False)


def as_tuple(o: object) -> tuple[object, ...]:
    return tuple(getattr(o, f.name) for f in dataclasses.fields(o))  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "kwargs"), [
    ((1,), {}), ((1, "x"), {}), ((1, "x", 2.5), {}), ((), {"a": 1, "c": 3.0}), ((1,), {"b": "y"}),
])  # fmt: skip
def test_same_fields_for_every_default_and_keyword(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    assert as_tuple(Fast(*args, **kwargs)) == as_tuple(Generated(*args, **kwargs))  # type: ignore[arg-type]


def test_still_frozen_hashable_and_checked() -> None:
    f = Fast(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.a = 2  # type: ignore[misc]
    assert hash(Fast(1, "b", 1.0)) == hash(Fast(1, "b", 2.0))  # c is compare=False
    assert dataclasses.replace(f, b="z") == Fast(1, "z")
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, d=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, a=2)  # type: ignore[misc]


def test_reading_uses_it_and_keeps_its_defaults() -> None:
    assert Reading.__init__.__qualname__ == "Reading.__init__"
    r = Reading("M-1", Channel.POWER, TS, 1.5, Kind.INSTANTANEOUS)
    assert (r.quality, r.status, r.source, r.received_at, r.seq, r.note, r.gateway_id) == (
        Quality.NONE, Status.VALID, Source.MODBUS, None, None, None, None)
    full = Reading("M-1", Channel.POWER, TS, 1.5, Kind.INSTANTANEOUS, Quality.SPIKE, Status.SUSPECT, Source.MQTT,
                   TS, 7, "n", "gw")
    assert as_tuple(full) == ("M-1", Channel.POWER, TS, 1.5, Kind.INSTANTANEOUS, Quality.SPIKE, Status.SUSPECT,
                              Source.MQTT, TS, 7, "n", "gw")
    assert full.with_flags(Quality.NONE, Status.VALID).quality is Quality.NONE


def test_refuses_what_it_cannot_copy() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (WithFactory, NotFrozen, PostInit):
        with pytest.raises(TypeError, match="slot_init"):
            slot_init(cls)
