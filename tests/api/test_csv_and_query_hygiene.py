"""CSV and query hygiene (issue 27 item 10): a row with too few cells is an error as one with too many;
a semicolon file is told to use commas; a query time whose '+' arrived as a space is told to write %2B.
Each answer names the field and what to do, and nothing is stored."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import fails, ok

CSV = {"content-type": "text/csv"}
HEADER = "meter_id,utility,protocol,device_number,location\n"


async def test_a_row_with_too_few_cells_is_an_error_like_one_with_too_many(api: httpx.AsyncClient) -> None:
    rows = ["E-1,electricity,mqtt,SN-1,1 Mill Road",
            "E-2,electricity,mqtt",  # too few: would have imported with blanks
            "E-3,electricity,mqtt,SN-3,3 Mill Road,extra",
            "E-4;electricity;mqtt;SN-4;4 Mill Road"]  # one cell, semicolons

    report = await ok(api.post("/v1/meters/import", content=HEADER + "\n".join(rows) + "\n\n", headers=CSV), 422)

    assert (report["imported"], report["failed"], report["applied"]) == (0, 3, False)
    assert {r["row"]: (r["meter_id"], r["error"]) for r in report["rows"] if not r["ok"]} == {
        3: ("E-2", "3 cell(s), the header has 5 columns: give every row one cell per column (an empty cell is "
                   "nothing between two commas)"),
        4: ("E-3", "6 cells, more than the header's 5 columns (a cell that holds a comma goes in double quotes)"),
        5: ("E-4;electricity;mqtt;SN-4;4 Mill Road",
            "1 cell(s), the header has 5 columns: give every row one cell per column (an empty cell is nothing "
            "between two commas); separate columns with commas (,), not semicolons or tabs (in a spreadsheet: save "
            "as 'CSV, comma delimited')")}
    assert (await ok(api.get("/v1/meters", params={"search": "E-"})))["items"] == []
    # Empty cells, written as such, are fine; so are empty lines.
    fixed = HEADER + "E-2,electricity,mqtt,,\n\n"
    assert (await ok(api.post("/v1/meters/import", content=fixed, headers=CSV), 201))["imported"] == 1


@pytest.mark.parametrize("separator", [";", "\t"])
async def test_a_file_separated_by_semicolons_is_told_to_use_commas(api: httpx.AsyncClient, separator: str) -> None:
    text = "meter_id;utility;protocol\nE-1;electricity;mqtt\n".replace(";", separator)

    await fails(api.post("/v1/meters/import", content=text, headers=CSV), 400, "invalid_request",
                "is one column: separate columns with commas (,), not semicolons or tabs")
    await fails(api.post("/v1/meters/import", files={"file": ("m.csv", text.encode(), "text/csv")}), 400,
                "invalid_request", "separate columns with commas")
    assert (await ok(api.get("/v1/meters", params={"search": "E-1"})))["items"] == []


@pytest.mark.parametrize(("path", "where"), [
    ("/v1/meters/M-0001/readings?from=2026-03-01T00:00:00+03:00", "query.from"),
    ("/v1/meters/M-0001/consumption?to=2026-03-01T00:00:00.250+0300", "query.to"),
    ("/v1/events?from=2026-03-01T00:00+03:00", "query.from"),
    ("/v1/consumers/C-1/billing?from=2026-03-01T00:00:00Z&to=2026-04-01T00:00:00+03:00", "query.to"),
    ("/v1/meters/M-0001/readings/history?channel=energy_import&ts=2026-03-01T00:00:00+03:00", "query.ts"),
])
async def test_a_plus_that_arrived_as_a_space_is_told_to_write_2b(api: httpx.AsyncClient, path: str,
                                                                   where: str) -> None:
    # httpx sends the '+' as it is; a server reads a '+' in a query as a space.
    body = await fails(api.get(path), 422, "invalid_request", where, "encode it as %2B")
    time = path.split("=")[-1].split("+")[0]
    assert f"({time}%2B" in body["message"], body
    # Written as the message says, the time is taken.
    assert (await api.get(path.replace("+", "%2B"))).status_code in (200, 404)  # 404: no reading at that time
