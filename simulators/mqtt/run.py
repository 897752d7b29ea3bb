"""`meter-gateway simulate payg`: run a PaygFleet until stopped, with progress and a summary table."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from simulators.mqtt.payg import FAULTS, PaygFleet
from simulators.mqtt.publisher import TlsFiles

__all__ = ["SimOptions", "parse_faults", "run_payg"]


@dataclass(frozen=True, slots=True)
class SimOptions:
    meters: int = 10
    host: str = "127.0.0.1"
    port: int = 1883
    interval: float = 5.0
    seed: int = 1
    prefix: str = "P-"
    first: int = 1
    topic: str = "payg/{meter_id}/balance"
    command_topic: str = "payg/{meter_id}/command"
    reply_topic: str = "payg/{meter_id}/command/reply"
    commands: bool = True
    report_every: int = 1
    step_s: float = 900.0
    currency: str = "KES"
    qos: int = 1
    rounds: int = 0  # 0 = until stopped
    faults: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    progress_every: float = 10.0

    def meter_ids(self) -> list[str]:
        return [f"{self.prefix}{i:05d}" for i in range(self.first, self.first + self.meters)]


def parse_faults(specs: Sequence[str], meter_ids: Sequence[str]) -> dict[str, str]:
    """["P-00003=duplicate", "P-00007=silence"] -> {meter: fault}; ValueError says what is wrong."""
    out: dict[str, str] = {}
    known = set(meter_ids)
    for spec in specs:
        meter, sep, fault = spec.partition("=")
        if not sep or not meter or not fault:
            msg = f"--fault {spec!r}: write METER=FAULT, e.g. {meter_ids[0] if meter_ids else 'P-00001'}=duplicate"
            raise ValueError(msg)
        if fault not in FAULTS:
            msg = f"--fault {spec!r}: unknown fault {fault!r} (known: {', '.join(sorted(FAULTS))})"
            raise ValueError(msg)
        if meter not in known:
            msg = f"--fault {spec!r}: no simulated meter {meter!r} (the fleet is {meter_ids[0]}..{meter_ids[-1]})"
            raise ValueError(msg)
        out[meter] = fault
    return out


async def run_payg(options: SimOptions, stop: asyncio.Event, console: Console) -> PaygFleet:
    """Publish until `stop` is set (or `rounds` are done); print progress, then a summary."""
    ids = options.meter_ids()
    fleet = PaygFleet(options.host, options.port, len(ids), seed=options.seed, interval=options.interval,
                      meter_ids=ids, topic=options.topic, command_topic=options.command_topic,
                      reply_topic=options.reply_topic, answer_commands=options.commands, currency=options.currency,
                      qos=options.qos, report_every=options.report_every, step_s=options.step_s,
                      username=options.username, password=options.password, tls=options.tls)
    for meter_id, fault in options.faults.items():
        fleet.set_fault(meter_id, fault)
    started = time.monotonic()
    await fleet.start(run=False)
    console.print(f"{len(ids)} simulated PAYG meters ({ids[0]}..{ids[-1]}) publishing to {options.host}:"
                  f"{options.port} every {options.interval:g} s"
                  + (f", faults: {len(options.faults)} meters" if options.faults else ""))
    try:
        await _rounds(fleet, options, stop, console, started)
    finally:
        await fleet.stop()
    console.print(summary(fleet, time.monotonic() - started))
    return fleet


async def _rounds(fleet: PaygFleet, options: SimOptions, stop: asyncio.Event, console: Console,
                  started: float) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    last_report = time.monotonic()
    while not stop.is_set() and (options.rounds == 0 or fleet.rounds < options.rounds):
        await fleet.publish_round()
        now = time.monotonic()
        if now - last_report >= options.progress_every:
            rate = fleet.total_published / max(1e-9, now - started)
            console.print(f"round {fleet.rounds}: {fleet.total_published} messages ({rate:,.0f}/s), "
                          f"{len(fleet.commands)} commands received", highlight=False)
            last_report = now
        next_at += options.interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, next_at - loop.time()))


def summary(fleet: PaygFleet, seconds: float) -> Table:
    """What was sent, by fault, and how commands were answered."""
    table = Table(title=f"PAYG simulator: {fleet.rounds} rounds in {seconds:.1f} s")
    for column in ("meters", "fault", "messages", "valid updates"):
        table.add_column(column, justify="right" if column != "fault" else "left")
    valid = Counter(m for m, _ in fleet.updates)
    by_fault: dict[str, list[str]] = {}
    for meter in fleet.meters.values():
        by_fault.setdefault(meter.fault or "none", []).append(meter.meter_id)
    for fault, meters in sorted(by_fault.items()):
        table.add_row(str(len(meters)), fault, str(sum(fleet.published[m] for m in meters)),
                      str(sum(valid[m] for m in meters)))
    answered = Counter(str(c.get("status")) for c in fleet.commands)
    if answered:
        table.caption = "commands: " + ", ".join(f"{n} {status}" for status, n in sorted(answered.items()))
    return table
