-- meter-gateway embedded store, version 3: the account system's tables.
--
-- * consumers: consumer numbers (accounts), deactivated but never deleted.
-- * At most one open assignment per meter, enforced by the database.
-- * Meters that already carry a consumer number (from version 1's upsert) get the open
--   assignment they imply, from their installation (or registration) time.

CREATE TABLE consumers (
    consumer_number TEXT PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    deactivated_at  INTEGER
);

CREATE UNIQUE INDEX assignments_open ON assignments (meter_id) WHERE end_ts IS NULL;

INSERT INTO assignments (meter_id, consumer_number, start_ts, created_at)
SELECT m.meter_id, m.consumer_number, coalesce(m.installed_at, m.created_at), m.updated_at
FROM meters AS m
WHERE m.consumer_number IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM assignments AS a WHERE a.meter_id = m.meter_id);

INSERT INTO consumers (consumer_number, created_at)
SELECT consumer_number, min(created_at) FROM assignments GROUP BY consumer_number;

CREATE INDEX events_ts_seq ON events (ts, seq);
