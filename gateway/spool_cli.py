"""`meter-gateway spool check|salvage`: the spool's state, and a salvage, as tables a person reads."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from gateway.errors import GatewayError
from storage.spool.salvage import check, salvage
from storage.spool.sqlitefile import SpoolLock


def check_report(path: Path, out: Console) -> int:
    """Print the spool's state; the exit code: 0 healthy (or no spool yet), 1 not."""
    result = check(path)
    if not result.exists:
        out.print(f"no spool at {path} (the gateway makes one at its first start)", highlight=False)
        return 0
    t = result.tally
    table = Table(title=f"spool {path}: {'healthy' if result.healthy else 'needs attention'}")
    table.add_column("what")
    table.add_column("value")
    table.add_row("file", f"{result.size_bytes:,} bytes")
    table.add_row("in use by a gateway", "yes" if result.in_use else "no")
    table.add_row("SQLite reads it whole", "yes" if result.problem is None else f"no: {result.problem}")
    if result.header_damaged:
        table.add_row("header", "destroyed (read through a rebuilt copy)")
    table.add_row("batches readable", f"{t.readable:,}")
    table.add_row("items in them", f"{t.items:,}")
    table.add_row("batches that do not decode", _ids(t.undecodable) + (" (forwarded as dead letters)"
                                                                      if t.undecodable else ""))
    table.add_row("batches lost (unreadable)", t.lost_text())
    if t.first_id is not None:
        table.add_row("ids", f"{t.first_id}..{t.last_id}")
    if result.problem is not None:
        table.add_row("what to do", "meter-gateway spool salvage (with the gateway stopped), or start the "
                                    "gateway: it salvages a damaged spool at start")
    out.print(table)
    return 0 if result.healthy else 1


def salvage_report(path: Path, out: Console, err: Console) -> int:
    """Salvage a damaged spool and print what was recovered; the exit code (1: it could not)."""
    if not path.exists():
        out.print(f"no spool at {path}: nothing to salvage", highlight=False)
        return 0
    lock = SpoolLock(path)
    try:
        lock.acquire()
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    try:
        found = check(path, in_use=False)
        if found.problem is None:
            out.print(f"spool {path} is readable whole: nothing to salvage ({found.tally.readable:,} batches, "
                      f"{found.tally.items:,} items; {_ids(found.tally.undecodable)} that do not decode, which "
                      "the gateway forwards as dead letters)", highlight=False)
            return 0
        report = salvage(path, reason=found.problem)
    except GatewayError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    finally:
        lock.release()
    t = report.tally
    table = Table(title=f"spool {path}: salvaged")
    table.add_column("what")
    table.add_column("value")
    table.add_row("why", report.reason)
    table.add_row("damaged file kept as", str(report.kept_as))
    table.add_row("header", "rebuilt to read it" if report.header_repaired else "as it was")
    table.add_row("batches recovered", f"{t.readable:,}")
    table.add_row("items in them", f"{t.items:,}")
    table.add_row("of those, not decodable", _ids(t.undecodable) + (" (forwarded as dead letters)"
                                                                    if t.undecodable else ""))
    table.add_row("batches lost", t.lost_text())
    out.print(table)
    return 0


def _ids(ids: list[int]) -> str:
    if not ids:
        return "0"
    shown = ", ".join(str(i) for i in ids[:10])
    return f"{len(ids)} (ids {shown}{', ...' if len(ids) > 10 else ''})"


__all__ = ["check_report", "salvage_report"]
