"""`meter-gateway status`: a running gateway's health and its meters by state, at a terminal.

Reads the gateway's own API (/readyz, /v1/diag/status, /v1/diag/meters) with a `diag` key, so
it shows exactly what the status page shows, from any machine that can reach the API.
The standard library's HTTP client is enough for three GETs; nothing else is needed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

#: Meter states that need a person's attention, worst first; --all lists the others too.
ATTENTION = ("lost", "failing", "silent", "waiting")
STATE_STYLE = {"ok": "green", "failing": "yellow", "lost": "bold red", "silent": "magenta", "waiting": "dim",
               "inactive": "dim"}


class StatusUnavailable(Exception):
    """The gateway could not be asked: not running there, refused the key, or answered nonsense.
    `exit_code` 2 (what the command exits with)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class StatusReport:
    url: str
    ready: dict[str, Any]
    status: dict[str, Any]
    meters: dict[str, Any]


def _get(url: str, path: str, key: str | None, timeout: float, *, accept: tuple[int, ...] = (200,)) -> Any:
    request = urllib.request.Request(url.rstrip("/") + path, headers={"Accept": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        if exc.code not in accept:
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body[:200].decode(errors="replace")
            hint = " (give a key with the diag scope: --key or METER_GATEWAY_KEY)" if exc.code in (401, 403) else ""
            msg = f"{url}{path} answered {exc.code}: {message}{hint}"
            raise StatusUnavailable(msg) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        msg = f"no gateway answers at {url}: {reason} (is it running? is --url or the config's [api] right?)"
        raise StatusUnavailable(msg) from None
    try:
        return json.loads(body)
    except ValueError:
        msg = f"{url}{path} did not answer JSON; is that a meter-gateway API?"
        raise StatusUnavailable(msg) from None


def fetch(url: str, key: str | None, *, timeout: float = 10.0) -> StatusReport:
    """Ask the gateway at `url`; raises StatusUnavailable with what went wrong and where."""
    ready = _get(url, "/readyz", None, timeout, accept=(200, 503))
    status = _get(url, "/v1/diag/status", key, timeout)
    meters = _get(url, "/v1/diag/meters", key, timeout)
    return StatusReport(url, ready, status, meters)


def _ago(ts: str | None, now: datetime) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, (now - datetime.fromisoformat(ts)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _duration(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h {rest // 60}m" if days else f"{hours}h {rest // 60}m {rest % 60}s"


def render(report: StatusReport, console: Console, *, all_meters: bool = False,
           now: datetime | None = None) -> None:
    """Print the gateway's health, drivers, spool and sink, then its meters by state."""
    now = now or datetime.now(UTC)
    st, ready = report.status, report.ready
    verdict = "[bold green]READY[/]" if ready["ready"] else f"[bold red]NOT READY[/] ({', '.join(ready['failed'])})"
    head = Table(title=f"meter-gateway {st['gateway_id']} at {report.url}", show_header=False, title_justify="left")
    head.add_column(style="dim")
    head.add_column()
    head.add_row("state", verdict)
    head.add_row("version / uptime", f"{st['version']} / {_duration(st['uptime_s'])}")
    if st.get("config_file"):
        head.add_row("config", f"{st['config_file']} (sha256 {st['config_hash']})")
    head.add_row("storage", str(ready.get("storage_mode")))
    for name, check in ready["checks"].items():
        head.add_row(name, ("[green]ok[/] " if check["ok"] else "[red]FAIL[/] ") + _escape(check["detail"]))
    spool = st.get("spool")
    if spool:
        age = f", oldest {spool['oldest_age_s']:.0f} s" if spool.get("oldest_age_s") else ""
        head.add_row("spool fill", f"{spool['items']} items, {spool['fill']:.1%} of {spool['max_bytes']:,} bytes{age}")
    sink = st.get("sink")
    if sink:
        last = _escape(sink["last_error"]) if sink.get("last_error") and not sink["up"] else ""
        head.add_row("store writes", ("up" if sink["up"] else "[red]DOWN[/]") +
                     f", {sink['rows']:,} rows, last write {_ago(sink.get('last_write_at'), now)} {last}".rstrip())
    console.print(head)

    drivers = Table(title="drivers", title_justify="left")
    for col in ("driver", "where", "connected", "meters", "rate", "errors since start"):
        drivers.add_column(col)
    for links in st["drivers"].values():  # each protocol: a list of links, or its one link (or null)
        for link in links if isinstance(links, list) else [links] if links else []:
            errors = ", ".join(f"{k} {n}" for k, n in link["errors_by_kind"].items()) or "-"
            meters = "" if link.get("meters") is None else str(link["meters"])
            drivers.add_row(link["label"], link["where"], "yes" if link["connected"] else "[red]no[/]", meters,
                            f"{link['rate']:.2f} {link['rate_unit']}", errors)
    console.print(drivers)

    counts = report.meters["counts"]
    summary = "  ".join(f"[{STATE_STYLE.get(s, '')}]{s} {n}[/]" for s, n in counts.items() if n)
    console.print(f"meters: {summary or 'none configured'}")
    shown = [m for m in report.meters["meters"] if all_meters or m["state"] in ATTENTION]
    if not shown:
        console.print("[green]every meter answers[/]" if counts.get("ok") else "")
        return
    table = Table(title="meters" if all_meters else "meters that need attention", title_justify="left")
    for col in ("meter", "state", "last seen", "failing since", "error"):
        table.add_column(col, overflow="fold")
    for m in shown:
        style = STATE_STYLE.get(m["state"], "")
        error = f"{m['last_error_kind']}: {m['last_error']}" if m.get("last_error") else ""
        since = _ago(m.get("failing_since"), now) if m.get("failing_since") else ""
        table.add_row(m["meter_id"], f"[{style}]{m['state']}[/]", _ago(m.get("last_seen"), now), since,
                      _escape(error))
    console.print(table)


def _escape(text: str) -> str:
    # Error messages can hold [brackets] (register lists) that rich would read as markup.
    return text.replace("[", r"\[")


__all__ = ["StatusReport", "StatusUnavailable", "fetch", "render"]
