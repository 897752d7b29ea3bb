"""The `meter-gateway` command. Thin: parse arguments, call a function, print for a person."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gateway.errors import ConfigError, GatewayError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="meter-gateway: Modbus and PAYG MQTT meters in, verified readings out.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
simulate_app = typer.Typer(no_args_is_help=True, help="Run simulated meter fleets (no gateway).")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")
app.add_typer(simulate_app, name="simulate")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Configuration file (TOML)")]


def _load(path: Path):  # type: ignore[no-untyped-def]
    from gateway.config.load import load_config

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
        asyncio.run(run_until_signal(gw.run))
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


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
    table.add_row("modbus endpoints", str(len(cfg.modbus.endpoints)))
    modbus = [m for m in cfg.meters if m.protocol == "modbus"]
    table.add_row("modbus meters", str(len(modbus)))
    table.add_row("PAYG (MQTT) meters", str(len(cfg.meters) - len(modbus)))
    table.add_row("mqtt", f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.enabled else "off")
    table.add_row("api", f"http://{cfg.api.host}:{cfg.api.port}" if cfg.api.enabled else "off")
    table.add_row("profiles", ", ".join(sorted(profiles)))
    out.print(table)


@db_app.command("migrate")
def db_migrate(config: ConfigOpt) -> None:
    """Apply pending schema migrations to the configured store."""
    from storage.open import open_store

    cfg, _ = _load(config)

    async def go() -> str:
        store = await open_store(cfg.storage.backend, sqlite_path=cfg.data_path(cfg.storage.sqlite_path),
                                 dsn=cfg.storage.dsn, chunk_interval=cfg.storage.chunk_interval)
        try:
            await store.migrate()
            return store.mode
        finally:
            await store.close()

    try:
        mode = asyncio.run(go())
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"migrations applied ({mode})")


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
        asyncio.run(run_until_signal(lambda stop: run_demo(stop, data_dir=data_dir, api_port=port,
                                                            n_modbus=meters, n_payg=payg, interval=interval,
                                                            console=out)))
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


@simulate_app.command("modbus")
def simulate_modbus(
    meters: Annotated[int, typer.Option(help="Number of meters (unit ids 1..N on one port)")] = 10,
    profile: Annotated[str, typer.Option(help="Device profile")] = "generic",
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port)")] = 5020,
    seed: int = 1,
    speedup: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 1.0,
) -> None:
    """Serve a fleet of simulated Modbus meters until Ctrl-C."""
    from gateway.config.profiles import load_profiles
    from simulators.modbus import SimFleet

    profiles = load_profiles()
    if profile not in profiles:
        err.print(f"unknown profile {profile!r} (known: {', '.join(sorted(profiles))})")
        raise typer.Exit(2)

    async def go(stop: asyncio.Event) -> None:
        async with SimFleet(profiles[profile], meters, seed=seed, speedup=speedup, port=port or None) as fleet:
            out.print(f"{meters} simulated {profile} meters on 127.0.0.1:{fleet.port}, unit ids 1..{meters}")
            await stop.wait()

    asyncio.run(run_until_signal(go))


@simulate_app.command("payg")
def simulate_payg(
    meters: Annotated[int, typer.Option(help="Number of PAYG meters")] = 10,
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Broker port")] = 1883,
    interval: Annotated[float, typer.Option(help="Seconds between balance updates")] = 5.0,
    seed: int = 1,
) -> None:
    """Publish balance updates of simulated PAYG meters to a broker until Ctrl-C."""
    from simulators.mqtt.payg import PaygFleet

    async def go(stop: asyncio.Event) -> None:
        fleet = PaygFleet(host, port, meters, seed=seed, interval=interval)
        async with fleet:
            out.print(f"{meters} simulated PAYG meters publishing to {host}:{port} every {interval} s")
            await stop.wait()

    asyncio.run(run_until_signal(go))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
