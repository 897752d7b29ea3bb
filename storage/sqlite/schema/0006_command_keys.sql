-- meter-gateway embedded store, version 6: PAYG commands are sent once per key (issue 27).
--
-- reference_key holds a command's reference as a key (a receipt number names one payment),
-- idempotency_key the client's Idempotency-Key header. Each is unique in the store, so a repeat
-- finds the command already stored under it, after a restart too, and requests that race are
-- decided here: the claim is an INSERT that does nothing on a taken key (Store.claim_command).
-- unsent: the command failed before anything reached the broker, so a repeat may send it.
--
-- Commands stored before this version: the earliest with each reference holds it as its key (a
-- later post with that reference repeats it); later ones with the same reference (sent twice
-- before this version) hold no key, and their history stays as it was.

ALTER TABLE commands ADD COLUMN reference_key TEXT;
ALTER TABLE commands ADD COLUMN idempotency_key TEXT;
ALTER TABLE commands ADD COLUMN unsent INTEGER NOT NULL DEFAULT 0;
UPDATE commands SET reference_key = reference
    WHERE reference IS NOT NULL AND correlation_id = (
        SELECT c.correlation_id FROM commands AS c WHERE c.reference = commands.reference
        ORDER BY c.created_at, c.correlation_id LIMIT 1);
CREATE UNIQUE INDEX commands_reference_key ON commands (reference_key);
CREATE UNIQUE INDEX commands_idempotency_key ON commands (idempotency_key);
