-- The bill: each call's job and tag in llm.usage; the reports read by
-- analysts over their own rows (views with new columns: dropped here,
-- defined again with the others).
ALTER TABLE llm.usage ADD COLUMN job_id bigint, ADD COLUMN job text, ADD COLUMN tag text;
CREATE INDEX usage_job ON llm.usage (job_id) WHERE job_id IS NOT NULL;
DROP VIEW IF EXISTS llm.usage_summary;
DROP VIEW IF EXISTS llm.queue_status;
DROP VIEW IF EXISTS llm.job_status;
DROP VIEW IF EXISTS llm.batches;
DROP FUNCTION IF EXISTS llm.cost_report(timestamptz, timestamptz);
-- create_provider returns the name, add_model the chain
DROP FUNCTION IF EXISTS llm.create_provider(text, text, text, text, text, jsonb);
DROP FUNCTION IF EXISTS llm.add_model(text, text, text, integer, numeric, numeric, numeric, numeric, numeric);
