-- meter-gateway embedded store, version 2: idempotent events and dead letters, the
-- flagged-reads index behind consumption and billing reads, PAYG commands.
--
-- mg_digest(...) is registered by the store on its connection (storage/identity.py):
-- md5 of the parts joined by U+001F, so keys of rows written before this version match
-- the keys the store computes from now on.

ALTER TABLE events ADD COLUMN ikey TEXT;
UPDATE events SET ikey = mg_digest(meter_id, kind, detail);
CREATE UNIQUE INDEX events_key ON events (ts, ikey);

ALTER TABLE deadletters ADD COLUMN ikey TEXT;
UPDATE deadletters SET ikey = mg_digest(source, origin, reason, payload, meter_id);
CREATE UNIQUE INDEX deadletters_key ON deadletters (ts, ikey);

-- Only reads that are not plain valid real reads: a few per meter. Consumption finds its
-- rollovers, estimates and suspect reads here without reading the range's history.
-- The predicate must stay textually equal to storage.consumption.FLAGGED_SQL.
CREATE INDEX readings_flagged ON readings (meter_id, channel, ts)
    WHERE (quality <> 0 OR status <> 'valid' OR source = 'estimate');

CREATE TABLE commands (
    correlation_id TEXT PRIMARY KEY,
    meter_id       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    status         TEXT NOT NULL,
    amount         TEXT,              -- exact decimal
    reference      TEXT,
    detail         TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER
);
CREATE INDEX commands_meter_created ON commands (meter_id, created_at);
CREATE INDEX commands_created ON commands (created_at);
