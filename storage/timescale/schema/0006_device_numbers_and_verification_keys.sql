-- meter-gateway on PostgreSQL / TimescaleDB, version 5 (issue #27): a device number belongs
-- to one meter per utility, and a verification records the key that made it.
--
-- * A database written before this version may hold a device number on several meters of
--   one utility. The upgrade does not change them and does not fail: the first meter (by
--   created_at, then meter_id) keeps the number; each later one is marked
--   device_number_duplicate and stays outside the unique index until its device number is
--   changed (PATCH /v1/meters/{id}, the configuration or a re-import clear the mark).
--   `meter-gateway db check` lists them. Every new or changed device number is unique, also
--   between gateways writing at once (the index decides, not a check before the insert).
-- * verification_log.key_id: the id of the API key that made the verdict (actor keeps its
--   name); NULL for verdicts recorded before this version, whose actor holds the text
--   "api key <id> (<name>)".

ALTER TABLE meters ADD COLUMN device_number_duplicate boolean NOT NULL DEFAULT false;

UPDATE meters AS m SET device_number_duplicate = true
WHERE m.device_number IS NOT NULL AND EXISTS (
    SELECT 1 FROM meters AS o
    WHERE o.utility = m.utility AND o.device_number = m.device_number
      AND (o.created_at, o.meter_id) < (m.created_at, m.meter_id));

CREATE UNIQUE INDEX meters_utility_device_number ON meters (utility, device_number)
    WHERE device_number IS NOT NULL AND NOT device_number_duplicate;

ALTER TABLE verification_log ADD COLUMN key_id text;
