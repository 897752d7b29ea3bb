"""Log setup: one line per event, `key=value` fields, meter_id whenever there is one."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime


class LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
        parts = [ts, record.levelname.lower(), record.name]
        meter = getattr(record, "meter_id", None)
        if meter:
            parts.append(f"meter_id={meter}")
        parts.append(record.getMessage())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries' own chatter (pymodbus logs every failed request) stays below warning.
    for noisy in ("pymodbus", "asyncio", "aiosqlite", "psycopg.pool", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.INFO)
