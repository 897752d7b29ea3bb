-- meter-gateway on PostgreSQL / TimescaleDB, version 2.
--
-- * Idempotent events and dead letters: unique on (ts, ikey), ikey = md5 of what
--   identifies the row (storage/identity.py computes the same digest).
-- * events becomes a hypertable like readings and balances.
-- * The flagged-reads partial index behind consumption and billing reads.
-- * The change feed's visibility protocol (see meter_gateway_feed_register below).
-- * PAYG commands.

ALTER TABLE events ADD COLUMN ikey text;
UPDATE events SET ikey = md5(concat_ws(E'\x1f', coalesce(meter_id, ''), kind, detail));
ALTER TABLE events ALTER COLUMN ikey SET NOT NULL;
-- A hypertable's unique constraints must contain ts: seq keeps a plain index.
ALTER TABLE events DROP CONSTRAINT events_pkey;
CREATE INDEX events_seq ON events (seq);
ALTER TABLE events ADD CONSTRAINT events_key UNIQUE (ts, ikey);

ALTER TABLE deadletters ADD COLUMN ikey text;
UPDATE deadletters SET ikey = md5(concat_ws(E'\x1f', source, origin, reason, payload, coalesce(meter_id, '')));
ALTER TABLE deadletters ALTER COLUMN ikey SET NOT NULL;
ALTER TABLE deadletters ADD CONSTRAINT deadletters_key UNIQUE (ts, ikey);

-- The predicate must stay textually equal to storage.consumption.FLAGGED_SQL.
CREATE INDEX readings_flagged ON readings (meter_id, channel, ts)
    WHERE (quality <> 0 OR status <> 'valid' OR source = 'estimate');

CREATE TABLE commands (
    correlation_id text COLLATE "C" PRIMARY KEY,
    meter_id       text COLLATE "C" NOT NULL,
    kind           text NOT NULL,
    status         text NOT NULL,
    amount         numeric,
    reference      text,
    detail         text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz
);
CREATE INDEX commands_meter_created ON commands (meter_id, created_at);
CREATE INDEX commands_created ON commands (created_at);

-- The change feed must never skip a reading that a concurrent writer commits after a
-- reader has already seen a higher seq. The protocol (a visibility watermark):
--
--   writer, first thing in a transaction that takes seqs:  SELECT meter_gateway_feed_register();
--     It reads V, the sequence's last value (every seq it takes later is > V), and takes a
--     shared transaction-level advisory lock whose key encodes V. The lock is visible to
--     every session at once (pg_locks) and vanishes at commit or rollback, also when the
--     writer's connection dies.
--   reader: SELECT meter_gateway_feed_watermark();  then, in a new statement,
--     rows with after < seq <= watermark. The watermark is min(S0, the smallest V of any
--     writer still registered), S0 the sequence's value read *before* the locks. A seq
--     <= S0 was taken by a writer that registered before S0 was read: still registered
--     (then the bound is below its seqs) or finished (then the next statement's snapshot
--     sees its rows, or they were rolled back). So nothing at or below the watermark can
--     still appear.
--
-- Keys: two-int advisory locks (objsubid 2), key1 = 0x4D47 << 16 | V >> 32, key2 = the
-- low 32 bits of V, so V up to 2^48 fits and the marker 0x4D47 ("MG") keeps other
-- applications' locks out of the minimum. The sequence must keep CACHE 1.
CREATE FUNCTION meter_gateway_feed_register() RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock_shared((1296498688 | (v >> 32))::integer, (v & 4294967295)::bit(32)::integer)
    FROM (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS v FROM readings_seq) AS s
$$;

CREATE FUNCTION meter_gateway_feed_watermark() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    s0 bigint;
    held bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO s0 FROM readings_seq;
    SELECT min(((classid::bigint & 65535) << 32) | objid::bigint) INTO held
    FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 2 AND (classid::bigint >> 16) = 19783
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database());
    RETURN least(s0, held);
END
$$;

DO $$
DECLARE
    chunk interval := coalesce(nullif(current_setting('meter_gateway.chunk_interval', true), ''), '7 days')::interval;
BEGIN
    IF coalesce(nullif(current_setting('meter_gateway.hypertables', true), ''), 'on') = 'on'
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('events', by_range('ts', chunk), create_default_indexes => false,
                                  migrate_data => true);
    END IF;
END
$$;
