"""Data flows one way, checked on the source with `ast`: the same contract as [tool.importlinter] in
pyproject.toml (which `lint-imports` checks), so the suite enforces it without that tool.

    gateway.cli, gateway.*_cli                            the command line
    gateway.runtime                                       the composition root: the only door to the drivers is drivers.registry
    api                                                   reads storage and the model; never a driver, a stage or the runtime
    drivers | normalise | validate | storage | config | simulators   independent siblings
    gateway.model                                         the vocabulary
    gateway.errors | gateway.backoff | gateway.logging
"""

from __future__ import annotations

from tests.architecture.imports import cycles, edges, within

#: Top first. A module may import its own layer's (non-independent) siblings and anything below.
LAYERS: list[tuple[tuple[str, ...], bool]] = [  # (members, independent)
    (("gateway.__main__", "gateway.cli", "gateway.status_cli", "gateway.spool_cli", "gateway.scan_cli",
      "gateway.simulate_cli"), False),
    (("gateway.runtime",), True),
    (("api",), True),
    (("drivers", "gateway.normalise", "gateway.validate", "storage", "gateway.config", "simulators"), True),
    (("gateway.model",), True),
    (("gateway.errors", "gateway.backoff", "gateway.logging"), True),
]
API_FORBIDDEN = ("drivers", "gateway.normalise", "gateway.validate", "gateway.config", "gateway.runtime", "simulators")
#: Outside drivers/, only the contract (drivers.base) and the registry are imported.
DRIVER_INSIDES = ("drivers.modbus", "drivers.mqtt", "drivers.polling")


def _place(module: str) -> tuple[int, str] | None:
    for i, (members, _) in enumerate(LAYERS):
        for member in members:
            if within(module, member):
                return i, member
    return None


def test_data_flows_one_way_and_the_stages_are_independent() -> None:
    wrong = []
    for a, targets in sorted(edges().items()):
        at = _place(a)
        if at is None:
            continue
        for b in sorted(targets):
            to = _place(b)
            if to is None:
                continue
            if to[0] < at[0]:
                wrong.append(f"{a} -> {b}: {at[1]} sits below {to[1]}")
            elif to[0] == at[0] and to[1] != at[1] and LAYERS[at[0]][1]:
                wrong.append(f"{a} -> {b}: {at[1]} and {to[1]} are independent siblings")
    assert wrong == []


def test_the_api_sees_storage_and_the_model_only() -> None:
    graph = edges()
    # Indirect imports count: what the API imports must not lead to a driver or a stage either.
    seen: dict[str, str] = {}
    todo = [m for m in graph if within(m, "api")]
    for m in todo:
        seen[m] = m
    while todo:
        m = todo.pop()
        for n in graph.get(m, ()):
            if n not in seen:
                seen[n] = m
                todo.append(n)
    reached = sorted(m for m in seen if any(within(m, f) for f in API_FORBIDDEN))
    assert reached == [], [f"{m} (imported by {seen[m]})" for m in reached]


def test_outside_drivers_only_the_registry_and_the_contract_are_imported() -> None:
    wrong = [f"{a} -> {b}" for a, targets in sorted(edges().items()) if not within(a, "drivers")
             for b in sorted(targets) if any(within(b, inside) for inside in DRIVER_INSIDES)]
    assert wrong == []


def test_no_import_cycles() -> None:
    assert cycles(edges()) == []

