"""A reading's audit trail (issue #24 item 7), the parts both stores share.

The verification log holds every change made to a stored reading: a person's verdict (verified,
rejected), a person's corrected value (an edit, with a note and the key that sent it), and an
estimate replaced by the real read. Each entry keeps the status and, for a new value, the value it
replaced, so the reading as first recorded is never lost (storage.records.ReadingOrigin). The
VEE's own verdict and the estimator's method are the reading's quality flags and note, recorded
with the reading itself: the trail's first entry is made from them (api.schemas.readings).
"""

from __future__ import annotations

import math

from gateway.errors import InvalidField
from gateway.model import Reading, Status

#: The status an edited reading gets: a person has given its value, so it is billable and no
#: longer suspect; the trail says it was an edit (not a verdict on the meter's value).
EDITED = Status.VERIFIED


def check_edit(value: float) -> None:
    """InvalidField('value') unless the corrected value is a finite number."""
    if not math.isfinite(value):
        raise InvalidField("value", f"must be a finite number, not {value!r}")


def edit_rule(r: Reading) -> str | None:
    """What the edited reading was judged by: the estimate's note (method, sources, parameters) or
    VEE's flags ('spike,gap'); None for a plain read."""
    if r.note and r.note.startswith("estimate="):
        return r.note
    return ",".join(r.quality.names()) or None


def unchanged(r: Reading, value: float) -> bool:
    """An edit that changes nothing (the value it has, already EDITED): no new seq, no entry."""
    return r.value == value and r.status is EDITED


__all__ = ["EDITED", "check_edit", "edit_rule", "unchanged"]
