-- meter-gateway on PostgreSQL / TimescaleDB, version 1.
--
-- The runner sets two settings for this transaction before running the file:
--   meter_gateway.chunk_interval  the hypertables' chunk interval, e.g. '7 days'
--   meter_gateway.hypertables     'on' to make hypertables when TimescaleDB is installed
-- Without TimescaleDB the same tables are plain tables and everything still works.
--
-- Keys and names are COLLATE "C": byte order, the same order as the SQLite store, so
-- keyset pagination and "ordered by meter_id / channel" agree on both backends, and
-- comparisons are cheaper than under a linguistic collation.

CREATE TABLE meters (
    meter_id        text COLLATE "C" PRIMARY KEY,
    utility         text NOT NULL,
    protocol        text NOT NULL,
    address         text NOT NULL,
    model           text NOT NULL,
    device_number   text COLLATE "C",
    payg            boolean NOT NULL DEFAULT false,
    status          text NOT NULL,
    installed_at    timestamptz,
    consumer_number text COLLATE "C",
    location        text,
    tags            jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX meters_device_number ON meters (device_number);
CREATE INDEX meters_consumer_number ON meters (consumer_number);

-- seq is the store-wide ingest order (the change-feed cursor), shared by every gateway
-- writing here. A hypertable's unique indexes must include ts, so seq gets a plain index.
CREATE SEQUENCE readings_seq AS bigint;
CREATE TABLE readings (
    seq         bigint NOT NULL DEFAULT nextval('readings_seq'),
    meter_id    text COLLATE "C" NOT NULL,
    channel     text COLLATE "C" NOT NULL,
    ts          timestamptz NOT NULL,
    value       double precision NOT NULL,
    kind        text NOT NULL,
    quality     integer NOT NULL DEFAULT 0,
    status      text NOT NULL,
    source      text NOT NULL,
    received_at timestamptz,
    note        text,
    CONSTRAINT readings_key UNIQUE (meter_id, channel, ts)
);
ALTER SEQUENCE readings_seq OWNED BY readings.seq;
-- readings_key serves per-channel ranges and "latest of a channel" (scanned backwards);
-- this one serves a meter's readings of all channels ordered by (ts, channel).
CREATE INDEX readings_meter_ts ON readings (meter_id, ts, channel);
CREATE INDEX readings_seq_idx ON readings (seq);

CREATE SEQUENCE balances_seq AS bigint;
CREATE TABLE balances (
    seq                     bigint NOT NULL DEFAULT nextval('balances_seq'),
    meter_id                text COLLATE "C" NOT NULL,
    ts                      timestamptz NOT NULL,
    balance                 numeric NOT NULL,
    currency                text NOT NULL,
    emergency_credit        numeric,
    emergency_credit_in_use boolean NOT NULL DEFAULT false,
    debt                    numeric,
    relay                   text,
    last_topup_amount       numeric,
    last_topup_ts           timestamptz,
    low_credit              boolean NOT NULL DEFAULT false,
    credit_exhausted        boolean NOT NULL DEFAULT false,
    received_at             timestamptz,
    CONSTRAINT balances_key UNIQUE (meter_id, ts)
);
ALTER SEQUENCE balances_seq OWNED BY balances.seq;
CREATE INDEX balances_seq_idx ON balances (seq);

CREATE TABLE events (
    seq          bigserial PRIMARY KEY,
    ts           timestamptz NOT NULL,
    meter_id     text COLLATE "C",
    kind         text NOT NULL,
    severity     text NOT NULL,
    detail       text NOT NULL,
    acknowledged boolean NOT NULL DEFAULT false
);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_meter_ts ON events (meter_id, ts);
CREATE INDEX events_kind_ts ON events (kind, ts);

-- origin is DeadLetter.where (a topic, or endpoint/unit/address); WHERE is a keyword.
CREATE TABLE deadletters (
    seq      bigserial PRIMARY KEY,
    ts       timestamptz NOT NULL,
    source   text NOT NULL,
    origin   text NOT NULL,
    reason   text NOT NULL,
    detail   text NOT NULL,
    payload  text NOT NULL,
    meter_id text COLLATE "C"
);
CREATE INDEX deadletters_ts ON deadletters (ts);
CREATE INDEX deadletters_meter_ts ON deadletters (meter_id, ts);
CREATE INDEX deadletters_reason_ts ON deadletters (reason, ts);

-- Filled by later work (assignments, API keys, verification); created now so that the
-- first schema version already has every table the product contract names.
CREATE TABLE assignments (
    id              bigserial PRIMARY KEY,
    meter_id        text COLLATE "C" NOT NULL,
    consumer_number text COLLATE "C" NOT NULL,
    start_ts        timestamptz NOT NULL,
    end_ts          timestamptz,
    opening_read    double precision,
    closing_read    double precision,
    created_at      timestamptz NOT NULL
);
CREATE INDEX assignments_meter_start ON assignments (meter_id, start_ts);
CREATE INDEX assignments_consumer_start ON assignments (consumer_number, start_ts);

CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    hash       text NOT NULL UNIQUE,
    scopes     text NOT NULL,          -- space-separated: read write diag admin
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE TABLE verification_log (
    id              bigserial PRIMARY KEY,
    meter_id        text COLLATE "C" NOT NULL,
    channel         text COLLATE "C" NOT NULL,
    ts              timestamptz NOT NULL,  -- the verified reading's ts
    previous_status text,
    status          text NOT NULL,
    note            text,
    actor           text,
    created_at      timestamptz NOT NULL
);
CREATE INDEX verification_log_reading ON verification_log (meter_id, channel, ts);

-- (nullif: a setting used earlier in the session reads as '' once its transaction ends.)
-- Hypertables last: the indexes above are then created on every chunk as well.
-- create_default_indexes => false: the (ts DESC) index TimescaleDB would add is not
-- used by any query here and would cost every insert.
DO $$
DECLARE
    chunk interval := coalesce(nullif(current_setting('meter_gateway.chunk_interval', true), ''), '7 days')::interval;
BEGIN
    IF coalesce(nullif(current_setting('meter_gateway.hypertables', true), ''), 'on') = 'on'
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings', by_range('ts', chunk), create_default_indexes => false);
        PERFORM create_hypertable('balances', by_range('ts', chunk), create_default_indexes => false);
    END IF;
END
$$;
