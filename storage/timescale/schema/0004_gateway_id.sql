-- meter-gateway on PostgreSQL / TimescaleDB, version 4: which gateway wrote each row.
--
-- Several gateways may write to one database (SPEC §8). Each pooled connection sets
-- meter_gateway.gateway_id to its gateway's configured id (storage/timescale/store.py),
-- and the column's default reads it, so every write path (binary COPY, the staging
-- insert, executemany) stamps rows without sending the id with each of them.
-- Rows written before this version keep NULL: which gateway wrote them is not known.
-- The column is added first and its default set after, so existing rows are not
-- rewritten (a large hypertable upgrades in moments).

ALTER TABLE readings ADD COLUMN gateway_id text;
ALTER TABLE readings ALTER COLUMN gateway_id SET DEFAULT nullif(current_setting('meter_gateway.gateway_id', true), '');

ALTER TABLE balances ADD COLUMN gateway_id text;
ALTER TABLE balances ALTER COLUMN gateway_id SET DEFAULT nullif(current_setting('meter_gateway.gateway_id', true), '');

ALTER TABLE events ADD COLUMN gateway_id text;
ALTER TABLE events ALTER COLUMN gateway_id SET DEFAULT nullif(current_setting('meter_gateway.gateway_id', true), '');

ALTER TABLE deadletters ADD COLUMN gateway_id text;
ALTER TABLE deadletters ALTER COLUMN gateway_id SET DEFAULT nullif(current_setting('meter_gateway.gateway_id', true), '');
