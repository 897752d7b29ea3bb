"""The status rule: which status a reading gets from its quality flags (SPEC §3).

    flags present                                              status
    -------------------------------------------------------    ---------
    OUT_OF_RANGE (NaN, +-inf, outside the High/Low limits)     rejected   impossible for the channel
    REGRESSION, SPIKE, FLATLINE, TAMPER, DUPLICATE_CONFLICT,   suspect    possibly wrong: a person verifies
      FUTURE_TS, STALE_TS, SUM_CHECK, TOU_SUM_CHECK,
      USAGE_WHILE_DISCONNECTED
    ESTIMATED (made by estimation, never read from a meter)    estimated
    none of the above; ROLLOVER, GAP, CLOCK_SKEW,              valid      the read itself is right: a wrap is
      ZERO_CONSUMPTION and RELAY_OPEN alone                                counted, a gap is missing data *before*
                                                                           it, skew is a warning, zero is a true
                                                                           reading of an empty premises (an event
                                                                           tells the account system)

The first matching line wins: a rejected read stays rejected whatever else it carries.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.model import Quality, Status
from gateway.model.frame import STATUS_CODE

REJECT = Quality.OUT_OF_RANGE
SUSPECT = (Quality.REGRESSION | Quality.SPIKE | Quality.FLATLINE | Quality.TAMPER | Quality.DUPLICATE_CONFLICT
           | Quality.FUTURE_TS | Quality.STALE_TS | Quality.SUM_CHECK | Quality.TOU_SUM_CHECK
           | Quality.USAGE_WHILE_DISCONNECTED)


def status_for(quality: Quality) -> Status:
    if quality & REJECT:
        return Status.REJECTED
    if quality & SUSPECT:
        return Status.SUSPECT
    if quality & Quality.ESTIMATED:
        return Status.ESTIMATED
    return Status.VALID


def status_codes(quality: npt.NDArray[np.int64]) -> npt.NDArray[np.int8]:
    """`status_for` of a whole column, as ReadingFrame status codes."""
    codes = np.full(quality.shape, STATUS_CODE[Status.VALID], dtype=np.int8)
    codes[(quality & int(Quality.ESTIMATED)) != 0] = STATUS_CODE[Status.ESTIMATED]
    codes[(quality & int(SUSPECT)) != 0] = STATUS_CODE[Status.SUSPECT]
    codes[(quality & int(REJECT)) != 0] = STATUS_CODE[Status.REJECTED]
    return codes


__all__ = ["REJECT", "SUSPECT", "status_codes", "status_for"]
