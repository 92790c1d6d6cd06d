-- The worker: a reply whose write-back is left (put off after
-- llm.writeback_timeout, or failed and retried) is written without a new call.
ALTER TABLE llm.queue ADD COLUMN answered boolean NOT NULL DEFAULT false;
-- provider => on llm.enqueue and llm.create_job: where the items go
ALTER TABLE llm.queue ADD COLUMN provider text;
ALTER TABLE llm.job ADD COLUMN provider text;
DROP FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text);
