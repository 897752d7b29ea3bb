"""`meter-gateway scan`: find the meters on one endpoint and print them as a table and as
ready-to-paste configuration.

The scan itself is the protocol's (`DriverSpec.scan`, reached through the driver registry); this
module reads the command line, shows progress, and writes what was found.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from drivers.base import ScanReport, ScanRequest
from gateway.errors import ConfigError
from gateway.model.profiles import DeviceProfile


class ScanUsageError(ValueError):
    """A target or option the scan cannot use; the message says which and why."""


def parse_units(text: str, low_id: int = 1, high_id: int = 247) -> tuple[int, ...]:
    """'1-247', '5', '1-10,20,30-32' -> the unit ids (each 1..247, in the order given, once); M-Bus
    primary addresses are 0..250."""
    units: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            msg = f"--units {text!r}: want ranges like 1-247 or 1-10,20"
            raise ScanUsageError(msg) from None
        if not low_id <= first <= last <= high_id:
            msg = f"--units {text!r}: unit ids are {low_id}..{high_id}, low before high (got {part.strip()!r})"
            raise ScanUsageError(msg)
        units.extend(u for u in range(first, last + 1) if u not in units)
    return tuple(units)


def build_request(target: str, *, transport: str | None, units: str, timeout: float, budget: float,
                  baudrate: int, parity: str) -> ScanRequest:
    """`target` is host:port (or host, port 502) or a serial device (a path such as /dev/ttyUSB0, or COM3)."""
    if timeout <= 0 or budget <= 0:
        msg = f"--timeout ({timeout:g}) and --budget ({budget:g}) must be above 0 seconds"
        raise ScanUsageError(msg)
    # A path (/dev/ttyUSB0, /dev/serial/by-id/..., a pty) or a Windows COM port is a serial line.
    serial = target.startswith("/") or bool(re.fullmatch(r"COM\d+", target.upper()))
    kind = transport or ("serial" if serial else "tcp")
    if kind not in ("tcp", "rtu_tcp", "serial"):
        msg = f"--transport {kind!r}: use tcp, rtu_tcp or serial"
        raise ScanUsageError(msg)
    ids = parse_units(units)
    if kind == "serial":
        if parity not in ("N", "E", "O"):
            msg = f"--parity {parity!r}: use N, E or O"
            raise ScanUsageError(msg)
        return ScanRequest("serial", serial_port=target, baudrate=baudrate, parity=parity, timeout=timeout,
                           units=ids, budget=budget)
    host, _, port_text = target.rpartition(":") if ":" in target else (target, "", "502")
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not host or not 0 < port < 65536:
        msg = f"target {target!r}: want host:port (e.g. 10.0.0.7:502) or a serial device (e.g. /dev/ttyUSB0)"
        raise ScanUsageError(msg)
    return ScanRequest(kind, host=host, port=port, timeout=timeout, units=ids, budget=budget)


#: ScanHit.unit of an M-Bus slave found only by the wildcard search (it answers at 0xFD once selected).
MBUS_SECONDARY_ONLY = 0xFD


def mbus_request(target: str, *, units: str, timeout: float, budget: float, baudrate: int | None,
                 parity: str | None) -> ScanRequest:
    """An M-Bus line: a serial device (a level converter, 2400 8E1 by default) or host:port of an
    M-Bus-to-Ethernet converter (port 10001 by default); primary addresses 0..250."""
    if timeout <= 0 or budget <= 0:
        msg = f"--timeout ({timeout:g}) and --budget ({budget:g}) must be above 0 seconds"
        raise ScanUsageError(msg)
    ids = parse_units(units, 0, 250)
    if target.startswith("/") or re.fullmatch(r"COM\d+", target.upper()):
        return ScanRequest("serial", serial_port=target, baudrate=baudrate or 2400, parity=parity or "E",
                           timeout=timeout, units=ids, budget=budget)
    host, _, port_text = target.rpartition(":") if ":" in target else (target, "", "10001")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        msg = f"--mbus {target!r}: want a serial device (e.g. /dev/ttyUSB0) or host:port of a converter"
        raise ScanUsageError(msg)
    return ScanRequest("tcp", host=host, port=int(port_text), timeout=timeout, units=ids, budget=budget)


def mbus_config_text(report: ScanReport, request: ScanRequest, name: str) -> str:
    """The [[mbus.buses]] entry and one [[meters]] table per slave found, as TOML to paste."""
    lines = ["[[mbus.buses]]", f'name = "{name}"']
    if request.transport == "serial":
        lines += [f'serial_port = "{request.serial_port}"', f"baudrate = {request.baudrate}"]
    else:
        lines += [f'host = "{request.host}"', f"port = {request.port}"]
    for hit in report.hits:
        secondary = hit.how.split()[1] if hit.how.startswith("secondary ") else None
        lines += ["", "[[meters]]", f'meter_id = "{secondary[:8] if secondary else hit.unit}"   # your meter number',
                  'protocol = "mbus"', f'bus = "{name}"']
        if hit.unit == MBUS_SECONDARY_ONLY and secondary:
            lines.append(f'secondary_address = "{secondary}"')
        else:
            lines.append(f"primary_address = {hit.unit}")
        lines.append(f'mbus_map = "{hit.profile}"' if hit.profile else "# no shipped map reads this medium: write one")
        lines[-1] += f"   # {hit.how}"
    return "\n".join(lines) + "\n"


def run_mbus_scan(request: ScanRequest, name: str, out: Console, err: Console) -> int:
    """The M-Bus scan (DRIVERS["mbus"].scan): a table and the configuration; 0 slaves found, 1 none."""
    from drivers.registry import DRIVERS

    scanner = DRIVERS["mbus"].scan
    assert scanner is not None
    with Progress(TextColumn("probing primary addresses"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("scan", total=len(request.units))

        async def go() -> ScanReport:
            return await scanner(request, {}, lambda done, _total: bar.update(task, completed=done))

        report = asyncio.run(go())
    if report.hits:
        table = Table(title=f"M-Bus slaves on {report.where}")
        for column in ("primary", "map", "what"):
            table.add_column(column)
        for hit in report.hits:
            table.add_row("-" if hit.unit == MBUS_SECONDARY_ONLY else str(hit.unit), hit.profile or "(none)", hit.how)
        out.print(table)
        out.print()
        out.print(mbus_config_text(report, request, name), markup=False, highlight=False, soft_wrap=True)
    if report.stopped:
        err.print(report.stopped, markup=False)
    err.print(f"{len(report.hits)} slave(s) found on {report.probed} of {report.wanted} primary addresses probed "
              "and by the wildcard search", markup=False)
    return 0 if report.hits else 1


def request_for_endpoint(endpoint: object, *, units: str, budget: float) -> ScanRequest:
    """A configured `[[modbus.endpoints]]` entry as a scan request: its transport, address, line
    settings and timeout."""
    e: Any = endpoint
    if e.kind == "serial":
        return ScanRequest("serial", serial_port=e.serial_port, baudrate=e.baudrate, parity=e.parity,
                           stopbits=e.stopbits, bytesize=e.bytesize, timeout=e.timeout, units=parse_units(units),
                           budget=budget)
    return ScanRequest(e.kind, host=e.host, port=e.port, timeout=e.timeout, units=parse_units(units), budget=budget)


def config_text(report: ScanReport, request: ScanRequest, name: str) -> str:
    """The endpoint and one [[meters]] table per identified unit, as TOML to paste."""
    lines = ["[[modbus.endpoints]]", f'name = "{name}"']
    if request.transport == "serial":
        lines += ['transport = "serial"', f'serial_port = "{request.serial_port}"', f"baudrate = {request.baudrate}",
                  f'parity = "{request.parity}"']
    else:
        lines += [f'host = "{request.host}"', f"port = {request.port}", f'transport = "{request.transport}"']
    lines.append(f"timeout = {request.timeout:g}")
    for hit in report.hits:
        if hit.profile is None:
            lines += ["", f"# unit {hit.unit} answers, but no shipped profile fits it: write one (see gateway/profiles/)"]
            continue
        lines += ["", "[[meters]]", f'meter_id = "{name}-{hit.unit:03d}"   # your meter number here',
                  f'endpoint = "{name}"', f"unit = {hit.unit}", f'profile = "{hit.profile}"']
        if hit.alternatives:
            lines[-1] += f"   # same registers: {', '.join(hit.alternatives)}"
    return "\n".join(lines) + "\n"


def _table(report: ScanReport) -> Table:
    table = Table(title=f"Meters on {report.where}")
    for column in ("unit", "profile", "also fits", "why"):
        table.add_column(column)
    for hit in report.hits:
        table.add_row(str(hit.unit), hit.profile or "(unknown)", ", ".join(hit.alternatives), hit.how)
    return table


def run_scan(request: ScanRequest, profiles: Mapping[str, DeviceProfile], name: str,
             out: Console, err: Console) -> int:
    """Scan, print, and return the exit code: 0 meters found, 1 none (or stopped early)."""
    from drivers.registry import DRIVERS  # pymodbus and the drivers load only for a scan

    scanner = DRIVERS["modbus"].scan
    assert scanner is not None  # the Modbus driver scans
    with Progress(TextColumn("scanning units"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("scan", total=len(request.units))

        async def go() -> ScanReport:
            return await scanner(request, profiles, lambda done, _total: bar.update(task, completed=done))

        report = asyncio.run(go())
    if report.hits:
        out.print(_table(report))
        out.print()
        out.print(config_text(report, request, name), markup=False, highlight=False, soft_wrap=True)
    if report.stopped:
        err.print(report.stopped, markup=False)
    found = sum(1 for h in report.hits if h.profile)
    err.print(f"{found} meter(s) identified, {len(report.hits) - found} unknown, on {report.probed} of "
              f"{report.wanted} unit ids probed", markup=False)
    return 0 if found else 1


def scan_command(
    target: Annotated[str | None, typer.Argument(help="host:port of a Modbus TCP server or RS-485 gateway, or a "
                                                      "serial device (/dev/ttyUSB0); or use --config and --endpoint")]
    = None,
    transport: Annotated[str | None, typer.Option(help="tcp | rtu_tcp | serial (default: serial for a device "
                                                       "path, else tcp)")] = None,
    units: Annotated[str, typer.Option(help="Unit ids to probe, e.g. 1-247 or 1-10,20")] = "1-247",
    timeout: Annotated[float | None, typer.Option(help="Seconds per request (default 1, or the endpoint's)")] = None,
    budget: Annotated[float, typer.Option(help="Seconds for the whole scan; it stops there and says so")] = 300.0,
    baudrate: Annotated[int, typer.Option(help="Serial line speed")] = 9600,
    parity: Annotated[str, typer.Option(help="Serial parity: N, E or O")] = "N",
    name: Annotated[str | None, typer.Option(help="Endpoint name in the printed configuration (default bus1, "
                                                  "or --endpoint)")] = None,
    profile_dir: Annotated[list[Path] | None, typer.Option(help="A folder of more device profiles (repeatable)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Scan an endpoint of this configuration "
                                                "(with --endpoint); its profile folders are used too")] = None,
    endpoint: Annotated[str | None, typer.Option(help="The [[modbus.endpoints]] name to scan (with --config)")] = None,
    mbus: Annotated[str | None, typer.Option("--mbus", help="Scan an M-Bus line instead: a serial device (2400 8E1 "
                                             "unless --baudrate/--parity) or host:port of a converter; --units "
                                             "are primary addresses (default 0-250)")] = None,
) -> None:
    """Find the meters on one endpoint (read requests only) and print [[meters]] to paste."""
    from gateway.config.profiles import load_profiles

    out, err = Console(), Console(stderr=True)
    if mbus is not None:
        try:
            if target is not None or config is not None:
                msg = "--mbus takes the line itself: give no other target or --config"
                raise ScanUsageError(msg)
            request = mbus_request(mbus, units="0-250" if units == "1-247" else units, timeout=timeout or 0.5,
                                   budget=budget, baudrate=None if baudrate == 9600 else baudrate,
                                   parity=None if parity == "N" else parity)
        except ScanUsageError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(2) from None
        raise typer.Exit(run_mbus_scan(request, name or "mbus1", out, err))
    try:
        if (config is None) != (endpoint is None) or (config is None) == (target is None):
            msg = "give a target (host:port or a serial device), or --config with --endpoint, not both"
            raise ScanUsageError(msg)
        if config is not None and endpoint is not None:
            request, profiles = _from_config(config, endpoint, units=units, budget=budget, timeout=timeout)
            name = name or endpoint
        else:
            assert target is not None
            request = build_request(target, transport=transport, units=units, timeout=timeout or 1.0, budget=budget,
                                    baudrate=baudrate, parity=parity)
            profiles = load_profiles(tuple(profile_dir or ()))
    except ScanUsageError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    raise typer.Exit(run_scan(request, profiles, name or "bus1", out, err))


def _from_config(path: Path, endpoint: str, *, units: str, budget: float, timeout: float | None
                 ) -> tuple[ScanRequest, Mapping[str, DeviceProfile]]:
    from dataclasses import replace

    from gateway.runtime.config import load_config

    if budget <= 0 or (timeout is not None and timeout <= 0):
        msg = f"--timeout and --budget ({budget:g}) must be above 0 seconds"
        raise ScanUsageError(msg)
    cfg, profiles = load_config(path)
    endpoints = list(cfg.section("modbus").endpoints)
    found = next((e for e in endpoints if e.name == endpoint), None)
    if found is None:
        msg = f"--endpoint {endpoint!r} is not in {path} (known: {', '.join(e.name for e in endpoints) or 'none'})"
        raise ScanUsageError(msg)
    request = request_for_endpoint(found, units=units, budget=budget)
    return (replace(request, timeout=timeout) if timeout else request), profiles


__all__ = ["ScanUsageError", "build_request", "config_text", "mbus_config_text", "mbus_request", "parse_units",
           "request_for_endpoint", "run_mbus_scan", "run_scan", "scan_command"]
