"""The `meter-gateway` command. Thin: parse arguments, call a function, print for a person."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gateway.errors import ConfigError, GatewayError
from gateway.runtime import eventloop
from gateway.scan_cli import scan_command

if TYPE_CHECKING:
    from storage.base import Store
    from storage.keys import ApiKey

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="meter-gateway: Modbus and PAYG MQTT meters in, verified readings out.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
simulate_app = typer.Typer(no_args_is_help=True, help="Run simulated meter fleets (no gateway).")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(simulate_app, name="simulate")
keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")
app.add_typer(keys_app, name="keys")
spool_app = typer.Typer(no_args_is_help=True, help="The spool: check it; salvage a damaged one.")
app.add_typer(spool_app, name="spool")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Configuration file (TOML)")]


def _load(path: Path):  # type: ignore[no-untyped-def]
    from gateway.runtime.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[bold red]config error[/] in {exc.source}:")
        for p in exc.problems:
            err.print(f"  {p}", markup=False, highlight=False)
        raise typer.Exit(2) from None


async def run_until_signal(gateway_run) -> None:  # type: ignore[no-untyped-def]
    """Run `gateway_run(stop)`; SIGTERM/SIGINT set `stop` so shutdown drains in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway_run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@app.command()
def run(config: ConfigOpt) -> None:
    """Run the gateway with a configuration file until SIGTERM or Ctrl-C."""
    from gateway.logging import setup_logging
    from gateway.runtime.gateway import Gateway

    cfg, profiles = _load(config)
    setup_logging(cfg.gateway.log_level)
    gw = Gateway(cfg, profiles, config_path=config)
    try:
        eventloop.run(run_until_signal(gw.run))
    except (GatewayError, ExceptionGroup) as exc:
        errors = _gateway_errors(exc)
        if errors is None:
            raise
        for error in errors:
            err.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(1) from None


def _gateway_errors(exc: BaseException) -> list[BaseException] | None:
    """The GatewayErrors that stopped the gateway: a task of its TaskGroup raises them inside
    an ExceptionGroup (a store that refuses the migration at start, say), and a user is owed
    their message, not a traceback. None when anything else is in there: that is a bug."""
    if isinstance(exc, GatewayError):
        return [exc]
    if not isinstance(exc, BaseExceptionGroup):
        return None
    matched, rest = exc.split(GatewayError)
    if rest is not None or matched is None:
        return None
    found: list[BaseException] = []
    for inner in matched.exceptions:
        leaves = _gateway_errors(inner)
        if leaves is None:
            return None
        found += leaves
    return found


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="Configuration file (TOML)")]) -> None:
    """Validate a configuration file (and the profiles it uses); print every problem or a summary."""
    cfg, profiles = _load(file)
    table = Table(title=f"{file}: OK", show_header=True)
    table.add_column("what")
    table.add_column("value")
    table.add_row("gateway id", cfg.gateway.id)
    table.add_row("storage", cfg.storage.backend)
    table.add_row("data dir", str(cfg.gateway.data_dir))
    from drivers.registry import DRIVERS
    from gateway.config.sections import bindings

    meters = bindings(cfg)
    for protocol, spec in DRIVERS.items():
        for what, value in spec.config_rows(cfg.section(protocol), meters):
            table.add_row(what, value)
    table.add_row("api", f"http://{cfg.api.host}:{cfg.api.port}" if cfg.api.enabled else "off")
    table.add_row("profiles", ", ".join(sorted(profiles)))
    out.print(table)


@db_app.command("migrate")
def db_migrate(config: ConfigOpt) -> None:
    """Apply pending schema migrations to the configured store."""
    cfg, _ = _load(config)

    async def go() -> str:
        from gateway.runtime.gateway import open_configured_store

        store = await open_configured_store(cfg)
        try:
            await store.migrate()
            return store.mode
        finally:
            await store.close()

    try:
        mode = eventloop.run(go())
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"migrations applied ({mode})")


@db_app.command("reorder")
def db_reorder(config: ConfigOpt,
               budget: Annotated[float | None, typer.Option(min=0, help="Start no chunk after this many seconds "
                                                            "(default: until every closed chunk is done)")] = None,
               ) -> None:  # fmt: skip
    """Rewrite closed readings chunks in meter order now (TimescaleDB, Apache license), e.g. from
    cron in a quiet hour instead of storage.reorder_chunks: reads of readings wait while a chunk
    is rewritten."""

    async def work(store: Store) -> str:
        result = await store.reorder(budget=budget)
        if result.mode != "cluster":
            why = "TimescaleDB's reorder policy does it" if result.mode == "policy" else "nothing to reorder here"
            return f"reorder: {result.mode} ({store.mode}: {why})"
        lines = [f"reordered {len(result.reordered)} chunk(s){': ' if result.reordered else ''}"
                 f"{', '.join(result.reordered)}"]  # fmt: skip
        if result.busy:
            lines.append(f"busy or refused (see the log; tried again next run): {', '.join(result.busy)}")
        lines.append(f"{result.left} closed chunk(s) still in arrival order")
        return "\n".join(lines)

    out.print(_with_store(config, work), highlight=False)


@db_app.command("check")
def db_check(config: ConfigOpt) -> None:
    """List every meter id, device number, consumer number and tag in the store that breaks the
    identifier rule (stored before it existed), and every device number on more than one meter of a
    utility (stored before they were unique); exit 1 if there is any. Changes nothing."""
    from gateway.model.identifiers import RULE
    from storage.audit import IdentifierFinding, find_bad_identifiers, find_shared_device_numbers

    async def work(store: Store) -> tuple[list[IdentifierFinding], int, list[IdentifierFinding]]:
        found, meters = await find_bad_identifiers(store)
        return found, meters, await find_shared_device_numbers(store)

    found, meters, shared = _with_store(config, work)
    # Stored values may hold '[' (rich markup) and be long: print them as they are, unwrapped.
    for finding in found + shared:
        out.print(str(finding), markup=False, highlight=False, soft_wrap=True)
    if not found:
        out.print(f"identifiers: all OK ({meters} meter(s) and their assignments checked)", highlight=False)
    else:
        out.print(f"{len(found)} stored value(s) break the identifier rule ({RULE}). The API answers 422 to paths "
                  "and bodies that hold them: fix each where it came from (the configuration file, the account "
                  "system) and then in the database by hand (there is no rename command).",
                  markup=False, highlight=False, soft_wrap=True)
    if shared:
        out.print(f"{len(shared)} meter(s) share a device number with another meter of their utility (kept from "
                  "before device numbers were unique; new ones are refused): change one of each pair.",
                  markup=False, highlight=False, soft_wrap=True)
    if found or shared:
        raise typer.Exit(1)


def _with_store(config: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured store, migrate it, run `await work(store)`, close it; errors end the command."""
    from gateway.runtime.gateway import open_configured_store

    cfg, _ = _load(config)

    async def go() -> T:
        store = await open_configured_store(cfg)
        try:
            await store.migrate()
            return await work(store)
        finally:
            await store.close()

    try:
        return eventloop.run(go())
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


@keys_app.command("create")
def keys_create(
    config: ConfigOpt,
    name: Annotated[str, typer.Option(help="Who or what uses the key, e.g. billing-system")],
    scope: Annotated[list[str], typer.Option(help="read | write | diag | admin (admin implies all); repeatable")],
) -> None:
    """Create an API key and print it once: only its hash is stored."""
    from datetime import UTC, datetime

    from storage.keys import Scope, new_key

    known = [s.value for s in Scope]
    wrong = [s for s in scope if s not in known]
    if wrong or not name.strip():
        err.print(f"--scope {', '.join(wrong)}: use {', '.join(known)}" if wrong else "--name must not be empty")
        raise typer.Exit(2)
    key, row = new_key(name.strip(), frozenset(Scope(s) for s in scope), datetime.now(UTC))

    async def create(store: Store) -> None:
        await store.create_api_key(row)

    _with_store(config, create)
    out.print(f"API key {row.key_id} ({row.name}, scopes: {', '.join(sorted(scope))}); shown only now:",
              highlight=False)
    print(key)  # alone on its line, without markup, so scripts can take it


@keys_app.command("list")
def keys_list(config: ConfigOpt) -> None:
    """List the API keys (never their secrets)."""
    async def fetch(store: Store) -> list[ApiKey]:
        return await store.list_api_keys()

    keys = _with_store(config, fetch)
    table = Table(title=f"API keys ({len(keys)})")
    for column in ("id", "name", "scopes", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(k.key_id, k.name, " ".join(sorted(s.value for s in k.scopes)),
                      k.created_at.isoformat(timespec="seconds"),
                      k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(config: ConfigOpt, key_id: Annotated[str, typer.Argument(help="The key's id (from keys list)")]) -> None:
    """Revoke an API key: requests with it get 401 (within the API's few-second key cache)."""
    from datetime import UTC, datetime

    async def revoke(store: Store) -> ApiKey:
        return await store.revoke_api_key(key_id, at=datetime.now(UTC))

    row = _with_store(config, revoke)
    when = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "?"
    out.print(f"API key {row.key_id} ({row.name}) revoked at {when}",
              highlight=False)


@spool_app.command("check")
def spool_check(config: ConfigOpt) -> None:
    """Report the spool's state: whether SQLite reads it whole, the batches and items waiting, rows that
    do not decode, and what a salvage would recover and lose. Changes nothing; safe while the gateway
    runs. Exits 0 when healthy, 1 when not."""
    from gateway.spool_cli import check_report

    cfg, _ = _load(config)
    raise typer.Exit(check_report(cfg.data_path(cfg.spool.path), out))


@spool_app.command("salvage")
def spool_salvage(config: ConfigOpt) -> None:
    """Move a damaged spool aside (spool.db.damaged-<time>) and copy every readable batch into a fresh
    spool, as the gateway does at start. Refuses while a gateway has the spool open: stop it first."""
    from gateway.spool_cli import salvage_report

    cfg, _ = _load(config)
    code = salvage_report(cfg.data_path(cfg.spool.path), out, err)
    if code:
        raise typer.Exit(code)


@app.command()
def status(
    url: Annotated[str | None, typer.Option(help="The gateway's API, e.g. http://edge-1:8080 (default: the "
                                                 "config's api section, else http://127.0.0.1:8080)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Take the API address from this "
                                                                        "configuration file")] = None,
    key: Annotated[str | None, typer.Option(envvar="METER_GATEWAY_KEY", show_default=False,
                                            help="An API key with the diag scope (env METER_GATEWAY_KEY)")] = None,
    all_meters: Annotated[bool, typer.Option("--all", help="List every meter, not only those needing attention")]
    = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer")] = 10.0,
) -> None:
    """A running gateway's health and its meters by state, read from its API. Exits 0 when it is
    ready, 1 when a readiness check fails, 2 when it cannot be asked."""
    from gateway.status_cli import StatusUnavailable, fetch, render

    if url is None and config is not None:
        cfg, _ = _load(config)
        host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::", "") else cfg.api.host
        url = f"http://{host}:{cfg.api.port}"
    url = url or "http://127.0.0.1:8080"
    try:
        report = fetch(url, key, timeout=timeout)
    except StatusUnavailable as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(exc.exit_code) from None
    render(report, out, all_meters=all_meters)
    raise typer.Exit(0 if report.ready["ready"] else 1)


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its spool and store")] = Path("var/demo"),
    port: Annotated[int, typer.Option(help="API port (0 = any free port)")] = 8080,
    meters: Annotated[int, typer.Option(help="Simulated Modbus meters")] = 10,
    payg: Annotated[int, typer.Option(help="Simulated PAYG meters")] = 5,
    interval: Annotated[float, typer.Option(help="Poll / publish interval, seconds")] = 2.0,
) -> None:
    """Everything on this machine: simulated meters, a private MQTT broker, the embedded store, the API."""
    from gateway.logging import setup_logging
    from gateway.runtime.demo import run_demo

    setup_logging("info")
    try:
        eventloop.run(run_until_signal(lambda stop: run_demo(stop, data_dir=data_dir, api_port=port,
                                                            n_modbus=meters, n_payg=payg, interval=interval,
                                                            console=out)))
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


@simulate_app.command("modbus")
def simulate_modbus(
    meters: Annotated[int, typer.Option(help="Number of meters, M-0001..M-N")] = 10,
    profile: Annotated[str, typer.Option(help="Device profile (register map) the meters serve")] = "generic",
    endpoints: Annotated[int, typer.Option(help="RS-485 gateways (one server and port each); meters are "
                                                "dealt to them in blocks, unit ids 1.. on each")] = 1,
    port: Annotated[int, typer.Option(help="First TCP port; endpoint k listens on port+k-1 (0 = free ports)")] = 5020,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    transport: Annotated[str, typer.Option(help="tcp (Modbus TCP) | rtu_tcp (RTU over TCP)")] = "tcp",
    seed: Annotated[int, typer.Option(help="Same seed, same data")] = 1,
    speedup: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 1.0,
    fault: Annotated[list[str] | None, typer.Option(help="METER=FAULT, repeatable, e.g. M-0003=timeout "
                                                         "(timeout, slow, exception, garbage, regression, "
                                                         "rollover, spike, stuck, tamper)")] = None,
) -> None:
    """Serve a fleet of simulated Modbus meters until Ctrl-C: one pymodbus server per endpoint."""
    from gateway.config.profiles import load_profiles
    from simulators.modbus import FAULTS, SimNetwork

    profiles = load_profiles()
    if profile not in profiles:
        err.print(f"unknown profile {profile!r} (known: {', '.join(sorted(profiles))})")
        raise typer.Exit(2)
    if transport not in ("tcp", "rtu_tcp"):
        err.print(f"--transport {transport!r}: use tcp or rtu_tcp (serial lines are simulated by the tests)")
        raise typer.Exit(2)
    faults: dict[str, str] = {}
    for item in fault or []:
        meter_id, _, name = item.partition("=")
        if name not in FAULTS:
            err.print(f"--fault {item!r}: want METER=FAULT with FAULT one of {', '.join(FAULTS)}")
            raise typer.Exit(2)
        faults[meter_id] = name
    try:
        network = SimNetwork(profiles[profile], meters, endpoints=endpoints, seed=seed, speedup=speedup,
                             host=host, transport=transport, port=port)
    except ValueError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    unknown = sorted(set(faults) - set(network.meter_ids))
    if unknown:
        err.print(f"--fault: unknown meter(s) {', '.join(unknown)}")
        raise typer.Exit(2)
    for meter_id, name in faults.items():
        try:
            network.set_fault(meter_id, name)  # type: ignore[arg-type]
        except ValueError as exc:
            err.print(f"--fault {meter_id}={name}: {exc}", markup=False)
            raise typer.Exit(2) from None

    async def go(stop: asyncio.Event) -> None:
        async with network:
            out.print(f"{meters} simulated {profile} meters on {endpoints} endpoint(s), {transport}:", highlight=False)
            for k, fleet in enumerate(network.fleets, 1):
                ids = [m.meter_id for m in fleet.meters.values()]
                out.print(f"  endpoint sim-{k} {fleet.host}:{fleet.port} units 1..{len(ids)} "
                          f"meters {ids[0]}..{ids[-1]}", highlight=False, markup=False)
            for meter_id, name in faults.items():
                out.print(f"  fault {meter_id}={name}", highlight=False, markup=False)
            out.print("ready; Ctrl-C stops", highlight=False)
            await stop.wait()

    eventloop.run(run_until_signal(go))


@simulate_app.command("payg")
def simulate_payg(
    meters: Annotated[int, typer.Option(help="Number of PAYG meters")] = 10,
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Broker port")] = 1883,
    interval: Annotated[float, typer.Option(help="Seconds between rounds of balance updates")] = 5.0,
    seed: Annotated[int, typer.Option(help="Same seed, same balances, top-ups and relay changes")] = 1,
    fault: Annotated[list[str] | None, typer.Option(
        help="METER=FAULT, repeatable; faults: malformed_json wrong_type missing_field oversized future_ts "
             "duplicate out_of_order burst silence no_reply reject_commands")] = None,
    first: Annotated[int, typer.Option(help="Number of the first meter (P-00001 is 1)")] = 1,
    prefix: Annotated[str, typer.Option(help="Meter id prefix")] = "P-",
    topic: Annotated[str, typer.Option(help="Balance topic template")] = "payg/{meter_id}/balance",
    report_every: Annotated[int, typer.Option(help="Rounds between periodic updates (changes go at once)")] = 1,
    step: Annotated[float, typer.Option(help="Simulated seconds of consumption per round")] = 900.0,
    rounds: Annotated[int, typer.Option(help="Stop after this many rounds (0: until Ctrl-C)")] = 0,
    commands: Annotated[bool, typer.Option(help="Answer top-up / disconnect / reconnect commands")] = True,
    currency: str = "KES",
    username: str | None = None,
    password: Annotated[str | None, typer.Option(envvar="METER_GATEWAY_MQTT_PASSWORD")] = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Publish balance updates of simulated PAYG meters to a broker (and answer commands) until Ctrl-C."""
    from simulators.mqtt.publisher import TlsFiles
    from simulators.mqtt.run import SimOptions, parse_faults, run_payg

    options = SimOptions(meters=meters, host=host, port=port, interval=interval, seed=seed, prefix=prefix,
                         first=first, topic=topic, commands=commands, report_every=report_every, step_s=step,
                         currency=currency, rounds=rounds, username=username, password=password,
                         tls=TlsFiles(str(tls_ca), str(tls_cert) if tls_cert else None,
                                      str(tls_key) if tls_key else None) if tls_ca else None)
    try:
        options = replace(options, faults=parse_faults(fault or [], options.meter_ids()))
        if meters < 1 or interval <= 0 or report_every < 1:
            raise ValueError("--meters and --report-every must be at least 1, --interval above 0")
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    eventloop.run(run_until_signal(lambda stop: run_payg(options, stop, out)))


# The scan command lives with its helpers; registered here so `meter-gateway scan` is one of ours.
app.command("scan")(scan_command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
