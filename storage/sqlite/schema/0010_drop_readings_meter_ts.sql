-- meter-gateway embedded store, version 10 (issue #26): one meter-ordered index fewer on readings.
--
-- Every reading is inserted into each index of the table; with thousands of meters a second the
-- inserts land all over the meter-ordered indexes, and each page they touch is written to the WAL
-- and again by the checkpoint. readings_meter_ts (meter_id, ts, channel) served the reads of a
-- meter across channels; since version 5 readings_cover (meter_id, channel, ts, ...) holds every
-- column, and the store reads those per channel instead (storage/sqlite/queries.py: a merge of one
-- index range per channel for a meter's readings, one probe per channel for its newest reading).
-- Dropping an index frees its pages for reuse; the file does not shrink (VACUUM would).

DROP INDEX IF EXISTS readings_meter_ts;
