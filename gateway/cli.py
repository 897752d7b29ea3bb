"""The `meter-gateway` command. Thin: parse arguments, call a function, print for a person."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gateway.errors import ConfigError, GatewayError
from gateway.runtime import eventloop
from gateway.runtime.eventloop import run_until_signal
from gateway.scan_cli import scan_command
from gateway.simulate_cli import simulate_app

if TYPE_CHECKING:
    from storage.base import Store
    from storage.keys import ApiKey

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="meter-gateway: Modbus and PAYG MQTT meters in, verified readings out.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
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


@app.command()
def run(config: ConfigOpt,
        one_process: Annotated[bool, typer.Option("--one-process", help="Run the core and the API in one process "
                                                  "(one event loop: API load then costs polls)")] = False) -> None:
    """Run the gateway with a configuration file until SIGTERM or Ctrl-C: its core and its API, each in
    a process of its own, restarted if one dies."""
    from gateway.logging import setup_logging

    cfg, _ = _load(config)
    setup_logging(cfg.gateway.log_level)
    if one_process:
        _run_gateway(config)
        return
    from gateway.runtime.processes import run_processes

    code = eventloop.run(run_until_signal(lambda stop: run_processes(config, cfg, stop)))
    raise typer.Exit(code)


ControlOpt = Annotated[Path | None, typer.Option(help="The core's control socket (default: control.sock in the "
                                                 "data directory)")]


@app.command(hidden=True)
def core(config: ConfigOpt, control: ControlOpt = None) -> None:
    """The gateway's core process (started by `run`): drivers, pipeline, spool, store; no API."""
    from gateway.runtime.processes import bind_to_parent

    bind_to_parent()
    from gateway.runtime.processes import EXIT_REPORTED

    _run_gateway(config, control=control, core_only=True, exit_code=EXIT_REPORTED)


@app.command(hidden=True)
def api(config: ConfigOpt, control: ControlOpt = None,
        fd: Annotated[int | None, typer.Option(help="Listening socket to serve")] = None) -> None:
    """The gateway's API process (started by `run`): asks the core over its control socket."""
    from gateway.logging import setup_logging
    from gateway.runtime.apiproc import run_api
    from gateway.runtime.control import control_path
    from gateway.runtime.processes import EXIT_REPORTED, bind_to_parent

    bind_to_parent()
    cfg, _ = _load(config)
    setup_logging(cfg.gateway.log_level)
    socket = control or control_path(cfg.gateway.data_dir)
    _report_errors(lambda: eventloop.run(run_until_signal(lambda stop: run_api(cfg, stop, control=socket, fd=fd))),
                   EXIT_REPORTED)


def _run_gateway(config: Path, *, control: Path | None = None, core_only: bool = False, exit_code: int = 1) -> None:
    from gateway.logging import setup_logging
    from gateway.runtime.control import control_path
    from gateway.runtime.gateway import Gateway

    cfg, profiles = _load(config)
    setup_logging(cfg.gateway.log_level)
    socket = (control or control_path(cfg.gateway.data_dir)) if core_only else None
    gw = Gateway(cfg, profiles, config_path=config, control=socket)
    _report_errors(lambda: eventloop.run(run_until_signal(gw.run)), exit_code)


def _report_errors(work: Callable[[], object], exit_code: int = 1) -> None:
    """Run `work`; the GatewayErrors that stop it are one line each and exit `exit_code`, not a traceback."""
    try:
        work()
    except (GatewayError, ExceptionGroup) as exc:
        errors = _gateway_errors(exc)
        if errors is None:
            raise
        for error in errors:
            err.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(exit_code) from None


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


# The scan command lives with its helpers; registered here so `meter-gateway scan` is one of ours.
app.command("scan")(scan_command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
