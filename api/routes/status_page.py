"""The technicians' status page at /status: server-rendered HTML, a little JavaScript, no CDN.

`/status` is a shell that holds no data and needs no key: it asks for a `diag` key and keeps it
in the browser's sessionStorage only. Its script fetches `/status/panel` with that key every few
seconds; the panel (fleet grid, the selected meter with a chart, spool, sink, broker, latest
events) is rendered here, with autoescaping, so nothing a meter sends can run in the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from api.auth import RequireScope
from api.ports import GatewayPort
from api.routes.diag import Gateway
from gateway import __version__
from gateway.errors import NotFound
from gateway.model import UNITS, Channel, Reading
from gateway.model.health import SEVERITY_ORDER, MeterDiagnostics

router = APIRouter(tags=["status page"])

_HERE = Path(__file__).resolve().parents[1]
STATIC = _HERE / "static"
_STATIC_FILES = {"status.js": "text/javascript", "status.css": "text/css", "favicon.svg": "image/svg+xml"}
MAX_TILES = 2000  # a grid larger than this is not read by a person; the counts still cover all
#: Only the gateway's own script runs in the page (no inline script, no event-handler attributes):
#: should anything a meter sent ever slip past the escaping, it still cannot run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["ago"] = ago
    env.filters["clock"] = clock
    env.filters["num"] = num
    env.filters["ms"] = ms
    return env


def ago(ts: datetime | str | None, now: datetime | None = None) -> str:
    """'12 s ago', '3 min ago', 'never'."""
    if ts is None:
        return "never"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    seconds = max(0.0, ((now or datetime.now(UTC)) - ts).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def clock(ts: datetime | str | None) -> str:
    """A UTC time as a technician reads it: 2026-05-01 14:03:07Z."""
    if ts is None:
        return "-"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


#: Read-only after import (templates compile once, the filters are pure): no state lives here.
_ENV = _templates()


@dataclass(frozen=True, slots=True)
class Chart:
    """An inline SVG line chart of one series; coordinates are computed here, drawn by the template."""

    title: str
    unit: str
    width: int
    height: int
    points: str  # "x,y x,y ..." for <polyline>
    flagged: list[tuple[float, float, str]]  # (x, y, tooltip) of readings with quality flags
    y_min: float
    y_max: float
    t_first: datetime
    t_last: datetime
    last: float

    @classmethod
    def of(cls, title: str, unit: str, series: list[tuple[datetime, float, str | None]],
           width: int = 1000, height: int = 180) -> Chart | None:
        if not series:
            return None
        pad = 6.0
        t0, t1 = series[0][0].timestamp(), series[-1][0].timestamp()
        values = [v for _, v, _ in series]
        lo, hi = min(values), max(values)
        span_t = (t1 - t0) or 1.0
        span_v = (hi - lo) or (abs(hi) * 0.01 or 1.0)  # a flat line is drawn in the middle

        def xy(ts: datetime, v: float) -> tuple[float, float]:
            x = pad + (ts.timestamp() - t0) / span_t * (width - 2 * pad) if t1 > t0 else width / 2
            y = height - pad - (v - lo) / span_v * (height - 2 * pad) if hi > lo else height / 2
            return round(x, 1), round(y, 1)

        coords = [xy(ts, v) for ts, v, _ in series]
        flagged = [(*xy(ts, v), f"{clock(ts)}: {num(v, 6)} {unit} ({why})") for ts, v, why in series if why]
        return cls(title=title, unit=unit, width=width, height=height,
                   points=" ".join(f"{x},{y}" for x, y in coords), flagged=flagged, y_min=lo, y_max=hi,
                   t_first=series[0][0], t_last=series[-1][0], last=values[-1])


def _reading_flags(r: Reading) -> str | None:
    names = r.quality.names()
    if r.status.value != "valid":
        names = [r.status.value, *names]
    return ", ".join(names) or None


async def chart_of(gateway: GatewayPort, diag: MeterDiagnostics, channel: str | None
                   ) -> tuple[Chart | None, list[str], str | None]:
    """The chart of the selected meter, the channels one may pick, and the one shown."""
    meter_id = diag.summary.meter_id
    if diag.summary.balances:  # a PAYG meter: its balance is what it reports
        balances, _ = await gateway.recent_balances(meter_id)
        series = [(b.ts, float(b.balance), "low credit" if b.low_credit else None) for b in balances]
        return Chart.of("balance", balances[-1].currency if balances else "", series), [], None
    channels = sorted({r.channel.value for r in diag.recent_readings})
    if not channels:
        return None, [], None
    shown = channel if channel in channels else ("power" if "power" in channels else channels[0])
    readings, _ = await gateway.recent_values(meter_id, Channel(shown))
    series = [(r.ts, r.value, _reading_flags(r)) for r in readings]
    return Chart.of(shown, UNITS[Channel(shown)], series), channels, shown


@router.get("/status", response_class=HTMLResponse, include_in_schema=False)
async def page(refresh: Annotated[float, Query(ge=1, le=300)] = 5.0) -> HTMLResponse:
    """The page shell: no data, no key needed; the script asks for a key and loads the panel."""
    html = _ENV.get_template("status.html").render(version=__version__, refresh=refresh)
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})


@router.get("/status/panel", response_class=HTMLResponse, dependencies=[Depends(RequireScope("diag"))],
            summary="The status page's live panel (HTML fragment)")
async def panel(
    gateway: Gateway,
    meter: Annotated[str | None, Query(max_length=64, description="The meter to show in detail")] = None,
    channel: Annotated[str | None, Query(max_length=32, description="The channel to chart")] = None,
) -> HTMLResponse:
    """Fleet grid coloured by state with last-seen times; the selected meter (default: the worst one) with
    a chart of its recent values; spool, sink and broker state; latest events."""
    readiness = await gateway.readiness()
    status = await gateway.status(per_meter=False)
    fleet = await gateway.fleet()
    events, events_from_store = await gateway.recent_events(limit=10)
    counts = {s.value: 0 for s in SEVERITY_ORDER}
    for m in fleet:
        counts[m.state.value] += 1
    selected: MeterDiagnostics | None = None
    unknown_meter = None
    if meter is not None:
        try:
            selected = await gateway.meter_diagnostics(meter)
        except NotFound:
            unknown_meter = meter
    if selected is None and fleet:
        selected = await gateway.meter_diagnostics(fleet[0].meter_id)
    chart, channels, shown = await chart_of(gateway, selected, channel) if selected else (None, [], None)
    context: dict[str, Any] = {
        "now": datetime.now(UTC), "readiness": readiness, "status": status, "fleet": fleet[:MAX_TILES],
        "hidden_tiles": max(0, len(fleet) - MAX_TILES), "counts": counts, "events": events,
        "events_from_store": events_from_store, "selected": selected, "unknown_meter": unknown_meter,
        "chart": chart, "channels": channels, "channel": shown,
    }
    html = _ENV.get_template("panel.html").render(**context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/status/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    """The page's own script and style (served by the gateway: the page works with no internet)."""
    media = _STATIC_FILES.get(name)
    if media is None:
        raise NotFound("static file", name)
    return FileResponse(STATIC / name, media_type=media, headers={"Cache-Control": "no-cache"})
