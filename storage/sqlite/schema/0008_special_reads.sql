-- meter-gateway embedded store, version 8: special reads (issue 25). A reading an account system
-- asked to be taken now, with its reason; the record is its audit (who asked, when, the outcome).
-- The readings themselves are ordinary rows of readings; read_ts says which (the meter's channels
-- at that time), so exports can give them their reason.

CREATE TABLE special_reads (
    correlation_id TEXT PRIMARY KEY,
    meter_id       TEXT NOT NULL,
    requested_at   INTEGER NOT NULL,
    read_ts        INTEGER,
    state          TEXT NOT NULL,
    doc            TEXT NOT NULL
);
CREATE INDEX special_reads_meter_ts ON special_reads (meter_id, read_ts);
CREATE INDEX special_reads_meter_state ON special_reads (meter_id, state);
