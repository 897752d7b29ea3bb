-- meter-gateway on PostgreSQL / TimescaleDB, version 5: PAYG commands are sent once per key
-- (issue 27).
--
-- reference_key holds a command's reference as a key (a receipt number names one payment),
-- idempotency_key the client's Idempotency-Key header. Each is unique in the database, so a
-- repeat finds the command already stored under it, after a restart too and on every gateway
-- sharing the database, and requests that race are decided here: the claim is an INSERT ... ON
-- CONFLICT DO NOTHING (Store.claim_command); a concurrent claim of the same key waits for the
-- first to commit and then finds its row.
-- unsent: the command failed before anything reached the broker, so a repeat may send it.
--
-- Commands stored before this version: the earliest with each reference holds it as its key (a
-- later post with that reference repeats it); later ones with the same reference (sent twice
-- before this version) hold no key, and their history stays as it was.

ALTER TABLE commands ADD COLUMN reference_key text COLLATE "C";
ALTER TABLE commands ADD COLUMN idempotency_key text COLLATE "C";
ALTER TABLE commands ADD COLUMN unsent boolean NOT NULL DEFAULT false;
UPDATE commands AS c SET reference_key = c.reference
    FROM (SELECT DISTINCT ON (reference) correlation_id FROM commands WHERE reference IS NOT NULL
          ORDER BY reference, created_at, correlation_id) AS earliest
    WHERE c.correlation_id = earliest.correlation_id;
CREATE UNIQUE INDEX commands_reference_key ON commands (reference_key);
CREATE UNIQUE INDEX commands_idempotency_key ON commands (idempotency_key);
