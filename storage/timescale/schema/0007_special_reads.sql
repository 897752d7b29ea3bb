-- meter-gateway on PostgreSQL / TimescaleDB, version 7: special reads (issue 25). A reading an
-- account system asked to be taken now, with its reason; the record is its audit (who asked, when,
-- the outcome). The readings themselves are ordinary rows of readings; read_ts says which (the
-- meter's channels at that time), so exports can give them their reason.

CREATE TABLE special_reads (
    correlation_id text COLLATE "C" PRIMARY KEY,
    meter_id       text COLLATE "C" NOT NULL,
    requested_at   timestamptz NOT NULL,
    read_ts        timestamptz,
    state          text NOT NULL,
    doc            text NOT NULL
);
CREATE INDEX special_reads_meter_ts ON special_reads (meter_id, read_ts);
CREATE INDEX special_reads_meter_state ON special_reads (meter_id, state);
