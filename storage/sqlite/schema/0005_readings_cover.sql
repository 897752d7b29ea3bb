-- meter-gateway embedded store, version 5: one meter's readings of a channel without
-- visiting the table.
--
-- Readings lie in the table in arrival order (rowid = seq), interleaved by meter, so a
-- meter's month of one channel (2,880 rows at 15 minutes) sat on ~2,900 table pages,
-- each looked up through the unique index. This index holds every column a read returns,
-- in (meter_id, channel, ts) order: the same read is one run of adjacent leaf pages
-- (index-only). It costs disk (about half the table again) and a wider index entry per
-- insert; SQLite has no clustered table that would also keep seq for the change feed.
-- Creating it on a large existing store takes a while (about 2 s per million rows).

CREATE INDEX readings_cover ON readings (
    meter_id, channel, ts, value, kind, quality, status, source, received_at, note, gateway_id
);
