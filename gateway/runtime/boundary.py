"""The pipeline's last line per item: an item whose decoding, normalising or validating raised
becomes a dead letter (reason `internal_error`) instead of stopping the gateway.

Each stage turns the bad input it knows into a dead letter with a precise reason itself
(`malformed_json`, `bad_text`, `non_finite`, ...); what arrives here is a failure nobody
foresaw, so the dead letter says which stage raised what, and keeps the item's origin (topic or
meter) and a preview of its bytes or words for whoever fixes it. The item is still acknowledged:
redelivering it would only raise again. Infrastructure failures (the spool's disk, the store)
never pass through here: the pipeline appends to the spool outside this boundary.
"""

from __future__ import annotations

import logging

from gateway.model import BalanceUpdate, DeadLetter, Reading
from gateway.model.samples import PollFailure, RawPayload, RawRegisters, Sample
from gateway.normalise.normaliser import PAYLOAD_KEEP, payload_preview

__all__ = ["INTERNAL_ERROR", "FailureLog", "failed_item"]

log = logging.getLogger(__name__)

#: The reason of these dead letters (the dead-letter list and the metrics group by it).
INTERNAL_ERROR = "internal_error"
_DETAIL_KEEP = 500

Failed = Sample | BalanceUpdate | Reading


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception whose own message fails: its type is all there is
        text = "(no message)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _clip(text: str, keep: int) -> str:
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def failed_item(item: Failed, stage: str, exc: BaseException) -> DeadLetter:
    """The dead letter of `item`, which raised `exc` in `stage` (decode, normalise, validate)."""
    detail = _clip(f"{stage} raised {_describe(exc)}", _DETAIL_KEEP)
    if isinstance(item, RawPayload):
        return DeadLetter(ts=item.received_at, source=item.SOURCE.value, where=item.topic, reason=INTERNAL_ERROR,
                          detail=detail, payload=payload_preview(item.payload), meter_id=item.meter_id)
    if isinstance(item, RawRegisters):
        words = " ".join(f"{b.function}/{b.address}:{list(b.words)}" for b in item.blocks)
        return DeadLetter(ts=item.received_at, source=item.SOURCE.value, where=item.meter_id, reason=INTERNAL_ERROR,
                          detail=detail, payload=_clip(words, PAYLOAD_KEEP), meter_id=item.meter_id)
    if isinstance(item, PollFailure):
        return DeadLetter(ts=item.ts, source=item.SOURCE.value, where=item.meter_id, reason=INTERNAL_ERROR,
                          detail=detail, payload=_clip(str(item.error), PAYLOAD_KEEP), meter_id=item.meter_id)
    return DeadLetter(ts=item.ts, source="gateway", where=type(item).__name__, reason=INTERNAL_ERROR, detail=detail,
                      payload=_clip(repr(item), PAYLOAD_KEEP), meter_id=item.meter_id)


class FailureLog:
    """Logs each failure at error level; the traceback the first time a stage raises a given
    exception type, one line after that (a flood of one poison input must not flood the log)."""

    def __init__(self, max_kinds: int = 1000) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._max_kinds = max_kinds

    def __call__(self, dead: DeadLetter, stage: str, exc: BaseException) -> None:
        kind = (stage, type(exc).__qualname__)
        first = kind not in self._seen
        if first and len(self._seen) < self._max_kinds:
            self._seen.add(kind)
        log.error("%s %s (meter %s): %s; kept as a dead letter (%s)%s", dead.source, dead.where, dead.meter_id,
                  dead.detail, INTERNAL_ERROR, "" if first else " [traceback logged before]",
                  exc_info=exc if first else None)
