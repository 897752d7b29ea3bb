-- meter-gateway embedded store, version 4: which gateway wrote each row.
--
-- The store stamps its gateway's configured id on every reading, balance update, event
-- and dead letter it inserts (the same column as on TimescaleDB, where several gateways
-- may share a database). Rows written before this version keep NULL.

ALTER TABLE readings ADD COLUMN gateway_id TEXT;
ALTER TABLE balances ADD COLUMN gateway_id TEXT;
ALTER TABLE events ADD COLUMN gateway_id TEXT;
ALTER TABLE deadletters ADD COLUMN gateway_id TEXT;
