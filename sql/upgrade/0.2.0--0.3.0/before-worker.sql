-- The worker: a reply whose write-back is left (put off after
-- llm.writeback_timeout, or failed and retried) is written without a new call.
ALTER TABLE llm.queue ADD COLUMN answered boolean NOT NULL DEFAULT false;
