"""The meters CSV reader (api/meter_csv.py) without a server: what it keeps for 50,000 rows is invisible
to the garbage collector, and the meters it hands the store are the ones the file describes."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime

from api.meter_csv import MeterCsv
from gateway.model import Meter, MeterStatus, Protocol, Utility
from storage.records import TakenIdentifiers

HEADER = "meter_id,utility,protocol,address,model,device_number,payg,status,installed_at,consumer_number,location,tags\n"
ROW = "M-{i},water,mqtt,meters/M-{i},generic,WM-{i},yes,maintenance,2026-01-05T08:00:00Z,C-{i},{i} Mill Road,zone=n;walk=3\n"


def test_the_rows_it_keeps_are_not_tracked_by_the_garbage_collector() -> None:
    # A full collection walks every tracked object, holding the GIL (the event loop's) while it
    # does: 50,000 Meter objects (or tuples holding a dict) made each one tens of milliseconds.
    table = MeterCsv(HEADER + "".join(ROW.format(i=i) for i in range(1200)))
    while table.read(500):
        pass
    gc.collect()
    gc.collect()  # a tuple is let go in the collection after the ones it holds are

    assert len(table.meters) == 1200
    assert not any(gc.is_tracked(row) for row in (*table.meters, *table.devices))


def test_the_meters_it_hands_on_are_the_files() -> None:
    table = MeterCsv(HEADER + ROW.format(i=1) + ROW.format(i=2) + "M-3,steam,mqtt,,,,,,,,,\n")
    while table.read(2):
        pass

    meters, report, applied = table.judge(TakenIdentifiers(frozenset({"M-2"}), {}), partial=True)

    assert applied and len(meters) == 1 and meters[0:5] == [meters[0]]
    assert meters[0] == Meter("M-1", Utility.WATER, Protocol.MQTT, "meters/M-1", "generic", "WM-1", True,
                              MeterStatus.MAINTENANCE, datetime(2026, 1, 5, 8, tzinfo=UTC), "C-1", "1 Mill Road",
                              {"zone": "n", "walk": "3"})
    body = json.loads(report)
    assert (body["imported"], body["failed"], body["applied"]) == (1, 2, True)
    assert [(r["row"], r["ok"], r["added"]) for r in body["rows"]] == [(2, True, True), (3, False, False),
                                                                       (4, False, False)]
