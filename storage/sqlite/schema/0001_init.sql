-- meter-gateway embedded store, version 1.
-- Every timestamp is an INTEGER count of microseconds since 1970-01-01 UTC: exact,
-- ordered as numbers, and cheap to index (ISO text would sort correctly only if every
-- writer used one fixed format). Money is TEXT holding an exact decimal.

CREATE TABLE meters (
    meter_id        TEXT PRIMARY KEY,
    utility         TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    address         TEXT NOT NULL,
    model           TEXT NOT NULL,
    device_number   TEXT,
    payg            INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL,
    installed_at    INTEGER,
    consumer_number TEXT,
    location        TEXT,
    tags            TEXT NOT NULL DEFAULT '{}',   -- JSON object of str -> str
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX meters_device_number ON meters (device_number);
CREATE INDEX meters_consumer_number ON meters (consumer_number);

-- seq is the store-wide ingest order (the change-feed cursor). AUTOINCREMENT so a
-- seq is never reused, even after the newest rows are deleted.
CREATE TABLE readings (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    value       REAL NOT NULL,
    kind        TEXT NOT NULL,
    quality     INTEGER NOT NULL DEFAULT 0,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    received_at INTEGER,
    note        TEXT,
    UNIQUE (meter_id, channel, ts)
);
-- The unique index serves per-channel ranges and "latest of a channel" (scanned
-- backwards); this one serves a meter's readings of all channels ordered by (ts, channel).
CREATE INDEX readings_meter_ts ON readings (meter_id, ts, channel);

CREATE TABLE balances (
    seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id                TEXT NOT NULL,
    ts                      INTEGER NOT NULL,
    balance                 TEXT NOT NULL,
    currency                TEXT NOT NULL,
    emergency_credit        TEXT,
    emergency_credit_in_use INTEGER NOT NULL DEFAULT 0,
    debt                    TEXT,
    relay                   TEXT,
    last_topup_amount       TEXT,
    last_topup_ts           INTEGER,
    low_credit              INTEGER NOT NULL DEFAULT 0,
    credit_exhausted        INTEGER NOT NULL DEFAULT 0,
    received_at             INTEGER,
    UNIQUE (meter_id, ts)
);

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts           INTEGER NOT NULL,
    meter_id     TEXT,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    detail       TEXT NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_meter_ts ON events (meter_id, ts);
CREATE INDEX events_kind_ts ON events (kind, ts);

-- origin is DeadLetter.where (a topic, or endpoint/unit/address); WHERE is a keyword.
CREATE TABLE deadletters (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       INTEGER NOT NULL,
    source   TEXT NOT NULL,
    origin   TEXT NOT NULL,
    reason   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    payload  TEXT NOT NULL,
    meter_id TEXT
);
CREATE INDEX deadletters_ts ON deadletters (ts);
CREATE INDEX deadletters_meter_ts ON deadletters (meter_id, ts);
CREATE INDEX deadletters_reason_ts ON deadletters (reason, ts);

-- Filled by later work (assignments, API keys, verification); created now so that the
-- first schema version already has every table the product contract names.
CREATE TABLE assignments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id        TEXT NOT NULL,
    consumer_number TEXT NOT NULL,
    start_ts        INTEGER NOT NULL,
    end_ts          INTEGER,
    opening_read    REAL,
    closing_read    REAL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX assignments_meter_start ON assignments (meter_id, start_ts);
CREATE INDEX assignments_consumer_start ON assignments (consumer_number, start_ts);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,          -- space-separated: read write diag admin
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE verification_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id        TEXT NOT NULL,
    channel         TEXT NOT NULL,
    ts              INTEGER NOT NULL,  -- the verified reading's ts
    previous_status TEXT,
    status          TEXT NOT NULL,
    note            TEXT,
    actor           TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX verification_log_reading ON verification_log (meter_id, channel, ts);
