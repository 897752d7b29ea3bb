-- meter-gateway PostgreSQL store, version 8 (issue #24 item 7): the verification log becomes each
-- reading's audit trail (GET /v1/meters/{id}/readings/{channel}/{ts}/history). The reading as first
-- recorded is never lost: every change keeps the value and status it replaced.
--
-- * action: what the entry records. 'verdict': a person verified or rejected the reading (every
--   entry written before this version); 'edit': a person's corrected value; 'estimate_replaced':
--   the real read arrived for a stored estimate and took its place.
-- * previous_value, value: the reading's value before and after ('edit', 'estimate_replaced');
--   NULL for a verdict (the value stays).
-- * rule: the rule or method behind the previous value, e.g. the replaced estimate's note
--   ("estimate=like_day from=... scale=...").
-- * recorded_at: when the previous value was recorded (the replaced estimate's received_at).

ALTER TABLE verification_log ADD COLUMN action text NOT NULL DEFAULT 'verdict';
ALTER TABLE verification_log ADD COLUMN previous_value double precision;
ALTER TABLE verification_log ADD COLUMN value double precision;
ALTER TABLE verification_log ADD COLUMN rule text;
ALTER TABLE verification_log ADD COLUMN recorded_at timestamptz;
