"""Rules of the meter registry both stores share: device numbers are unique per utility.

Pure: the stores read which meters hold the device numbers asked for, and these decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gateway.model import Meter, Utility
from storage.records import DeviceNumberClash

__all__ = ["clashes", "devices_of"]


def devices_of(meters: Iterable[Meter]) -> list[tuple[Utility, str]]:
    """The (utility, device number) of every meter that has one, each once."""
    return list(dict.fromkeys((m.utility, m.device_number) for m in meters if m.device_number is not None))


def clashes(meters: Sequence[Meter], holders: Mapping[tuple[Utility, str], str], *,
            first: dict[tuple[Utility, str], str] | None = None) -> list[DeviceNumberClash]:
    """Device numbers of `meters` that another meter holds (`holders`: the stored holder of each)
    or that an earlier one of `meters` has; in the order of `meters`. `first`: the holders among
    earlier batches of the same write, updated with this one's (a write checked a batch at a time)."""
    found: list[DeviceNumberClash] = []
    first = {} if first is None else first
    for m in meters:
        if m.device_number is None:
            continue
        key = (m.utility, m.device_number)
        holder = holders.get(key) or first.get(key)
        if holder is not None and holder != m.meter_id:
            found.append(DeviceNumberClash(m.meter_id, m.utility, m.device_number, holder))
        first.setdefault(key, m.meter_id)
    return found
