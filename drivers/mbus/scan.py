"""`meter-gateway scan --mbus`: the slaves on one M-Bus line, by primary address (SND_NKE to each,
then REQ_UD2 to those that answer) and by secondary address (the wildcard search), each with the
object map its medium suggests. Read requests only; nothing on a slave changes, except that the
search leaves the last one selected (an SND_NKE to 0xFD deselects it at the end)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from drivers.base import ScanHit, ScanReport, ScanRequest
from drivers.mbus import frame
from drivers.mbus.link import Link, LinkSettings
from drivers.mbus.master import Master
from gateway.errors import DriverError, MeterTimeout

#: Media (EN 13757-3 table 3) and the shipped map that reads them.
MEDIA = {0x02: ("electricity", None), 0x03: ("gas", "mbus_water"), 0x04: ("heat (outlet)", "mbus_heat"),
         0x06: ("warm water", "mbus_water"), 0x07: ("water", "mbus_water"), 0x0A: ("cooling (outlet)", "mbus_heat"),
         0x0B: ("cooling (inlet)", "mbus_heat"), 0x0C: ("heat (inlet)", "mbus_heat"),
         0x0D: ("heat / cooling", "mbus_heat"), 0x15: ("hot water", "mbus_water"), 0x16: ("cold water", "mbus_water")}
#: ScanHit.unit of a slave found only by the wildcard search (it has no usable primary address).
SECONDARY_ONLY = frame.ADDRESS_SELECTED


def medium(code: int) -> tuple[str, str | None]:
    return MEDIA.get(code, (f"medium {code:#04x}", None))


def link_settings(request: ScanRequest) -> LinkSettings:
    if request.transport == "serial":
        return LinkSettings("serial", serial_port=request.serial_port or "", baudrate=request.baudrate,
                            parity=request.parity, stopbits=request.stopbits)
    return LinkSettings("tcp", host=request.host, port=request.port)


async def scan(request: ScanRequest, profiles: Mapping[str, Any], progress: Callable[[int, int], None]
               ) -> ScanReport:
    """Primary addresses `request.units` (0..250), then the wildcard search of secondary ids."""
    master = Master(Link(link_settings(request)), request.timeout, "scan")
    where = link_settings(request).address
    started = time.monotonic()
    hits: list[ScanHit] = []
    seen: set[str] = set()
    probed = 0
    stopped = None
    try:
        for address in request.units:
            if time.monotonic() - started > request.budget:
                stopped = f"stopped after {request.budget:g} s (--budget), at primary address {address}"
                break
            probed += 1
            progress(probed, len(request.units))
            if not await master.probe(address, f"{where} primary {address}"):
                continue
            try:
                readout = await master.read(address, f"{where} primary {address}")
            except DriverError as exc:
                hits.append(ScanHit(address, None, f"answers SND_NKE, but its data is unreadable: {exc.detail}"))
                continue
            t = readout.telegrams[0]
            name, map_name = medium(t.medium)
            seen.add(t.ident)
            hits.append(ScanHit(address, map_name, f"secondary {t.secondary()} {t.manufacturer} {name}"))
        if stopped is None:
            for secondary in await master.search(f"{where} search"):
                if secondary[:8] in seen:
                    continue
                name, map_name = medium(int(secondary[14:16], 16))
                hits.append(ScanHit(SECONDARY_ONLY, map_name, f"secondary {secondary} {name} (wildcard search)"))
    except MeterTimeout:
        pass
    except DriverError as exc:
        stopped = f"the line failed: {exc}"
    finally:
        master.link.close()
    return ScanReport(where, len(request.units), probed, tuple(hits), stopped)


__all__ = ["SECONDARY_ONLY", "medium", "scan"]
