"""The event loop every gateway process runs on.

uvloop (libuv) instead of asyncio's selector loop: the gateway is a loop of small network
round trips (a Modbus request, a database query, an HTTP request), and the loop's own cost per
round trip was most of what was left to cut. Measured on the account-system API (bench/api.py,
latest reading at concurrency 32): 734 requests/s on asyncio's loop, 1,200-1,500 on uvloop,
same code. Tests still run the code on asyncio's loop (pytest-asyncio), so both stay covered.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on a uvloop event loop."""
    return uvloop.run(main)
