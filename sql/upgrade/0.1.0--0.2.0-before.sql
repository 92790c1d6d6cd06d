-- pg_llm 0.1.0 to 0.2.0: the changes to tables, and the functions and
-- views whose signature or shape changed, before every function and view
-- of 0.2.0 is defined again (the upgrade script is built from this file,
-- the definitions in sql/install/*.sql, and 0.1.0--0.2.0-after.sql).
\echo Use "ALTER EXTENSION pg_llm UPDATE TO '0.2.0'" to load this file. \quit

-- providers: the values of extra headers are kept with the key; a base_url
-- has no white space or control characters
ALTER TABLE llm.provider ADD COLUMN headers text[] NOT NULL DEFAULT '{}';
ALTER TABLE llm.provider DROP CONSTRAINT provider_base_url_check;
ALTER TABLE llm.provider ADD CONSTRAINT provider_base_url_check
    CHECK (base_url ~* '^https?://[^/]' AND base_url !~ '[[:cntrl:][:space:]]');
ALTER TABLE llm._provider_secret ALTER COLUMN api_key DROP NOT NULL;
ALTER TABLE llm._provider_secret ADD COLUMN headers jsonb;

-- the queue: who holds a lease, and ready items by role for fair claims
ALTER TABLE llm.queue ADD COLUMN leased_by bigint;
DROP INDEX llm.queue_ready;
CREATE INDEX queue_ready ON llm.queue (enqueued_by, next_attempt_at, id) WHERE status = 'pending';

-- budgets: a cap on queued items
ALTER TABLE llm.budget ADD COLUMN max_queued bigint CHECK (max_queued >= 0);

-- functions and views whose arguments, results or columns changed
DROP VIEW llm.budgets;
DROP FUNCTION llm.set_budget(regrole, numeric, bigint);
DROP FUNCTION llm.usage_buffer_status();
DROP FUNCTION llm._job_text_like(oid);
