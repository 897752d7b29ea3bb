"""`meter-gateway simulate modbus|payg|dlms`: the simulated meter fleets alone (no gateway)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gateway.runtime import eventloop
from gateway.runtime.eventloop import run_until_signal

out = Console()
err = Console(stderr=True)
simulate_app = typer.Typer(no_args_is_help=True, help="Run simulated meter fleets (no gateway).")


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


def _hex_key(name: str, text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise ValueError(f"{name}: want 32 hex digits (an AES-128 key), got {len(text)} characters")
    return key


@simulate_app.command("dlms")
def simulate_dlms(
    meters: Annotated[int, typer.Option(help="Number of meters, D-0001..D-N")] = 10,
    port: Annotated[int, typer.Option(help="First TCP port; meter k listens on port+k-1 (0 = free ports)")] = 4059,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    cipher: Annotated[bool, typer.Option(help="Security suite 0: the management client (SAP 1) must use "
                                              "HLS-GMAC with ciphered APDUs; without it, LLS (password)")] = False,
    password: Annotated[str, typer.Option(envvar="METER_GATEWAY_DLMS_PASSWORD",
                                          help="LLS password of the management client")] = "12345678",
    key: Annotated[str, typer.Option(envvar="METER_GATEWAY_DLMS_EK",
                                     help="Global unicast encryption key (hex); default: the Green Book's test key")]
    = "000102030405060708090A0B0C0D0E0F",
    auth_key: Annotated[str, typer.Option(envvar="METER_GATEWAY_DLMS_AK",
                                          help="Global authentication key (hex); default: the Green Book's test key")]
    = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF",
    seed: Annotated[int, typer.Option(help="Same seed, same consumption and profile history")] = 1,
    history_days: Annotated[int, typer.Option(help="Days of 15-minute load profile each meter holds")] = 30,
    speedup: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 1.0,
    push: Annotated[str | None, typer.Option(help="HOST:PORT of a head-end listener: every meter pushes a "
                                                  "DataNotification there each --push-interval")] = None,
    push_interval: Annotated[float, typer.Option(help="Seconds between a meter's pushes")] = 60.0,
    fault: Annotated[list[str] | None, typer.Option(help="METER=FAULT, repeatable (several per meter), e.g. "
                                                         "D-0003=wrong_key (timeout, refuse, wrong_key, drift, "
                                                         "gaps, tamper, garbage)")] = None,
) -> None:
    """Serve a fleet of simulated DLMS/COSEM meters (TCP, IEC 62056-47 wrapper) until Ctrl-C."""
    from simulators.dlms import DlmsFleet, FleetOptions, Secrets, parse_faults

    try:
        if meters < 1 or history_days < 1 or push_interval <= 0 or speedup < 0:
            raise ValueError("--meters and --history-days must be at least 1, --push-interval above 0")
        secrets = Secrets(password=password.encode(), cipher=cipher, encryption_key=_hex_key("--key", key),
                          authentication_key=_hex_key("--auth-key", auth_key))
        push_to = None
        if push:
            push_host, _, push_port = push.rpartition(":")
            if not push_host or not push_port.isdigit():
                raise ValueError(f"--push {push!r}: want HOST:PORT")
            push_to = (push_host, int(push_port))
        options = FleetOptions(meters=meters, host=host, port=port, seed=seed, secrets=secrets,
                               history_days=history_days, speedup=speedup, push=push_to, push_interval=push_interval)
        options = replace(options, faults=parse_faults(fault or [], options.meter_ids()))
        fleet = DlmsFleet(options)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None

    async def go(stop: asyncio.Event) -> None:
        try:
            async with fleet:
                ids = list(fleet.meters)
                first, last = fleet.meters[ids[0]], fleet.meters[ids[-1]]
                security = "HLS-GMAC, suite 0 (ciphered)" if cipher else "LLS (password)"
                out.print(f"{meters} simulated DLMS meters {ids[0]}..{ids[-1]} on {host} ports {first.port}.."
                          f"{last.port} (one meter per port, wrapper, server address 1); public client 16 "
                          f"(lowest), management client 1 ({security})", highlight=False, markup=False)
                if meters <= 20 or not port:
                    for meter_id, meter in fleet.meters.items():
                        out.print(f"  {meter_id} {host}:{meter.port} system title {meter.state.spec.system_title.hex()}",
                                  highlight=False, markup=False)
                for meter_id, names in options.faults.items():
                    out.print(f"  fault {meter_id}={','.join(sorted(names))}", highlight=False, markup=False)
                if push_to:
                    out.print(f"  pushing DataNotifications to {push} every {push_interval:g} s", highlight=False,
                              markup=False)
                out.print("ready; Ctrl-C stops", highlight=False)
                await stop.wait()
        except OSError as exc:
            err.print(f"[bold red]error:[/] cannot listen on {host}:{port}..: {exc}", highlight=False)

    eventloop.run(run_until_signal(go))
