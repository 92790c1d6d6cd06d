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

-- the queue: who holds a lease, ready items by role for fair claims, and
-- items sent through a provider's batch API (sql/install/batch.sql)
ALTER TABLE llm.queue ADD COLUMN leased_by bigint;
ALTER TABLE llm.queue ADD COLUMN via text NOT NULL DEFAULT 'realtime' CHECK (via IN ('realtime', 'batch_api'));
ALTER TABLE llm.queue ADD COLUMN batch_id bigint;
ALTER TABLE llm.queue DROP CONSTRAINT queue_status_check;
ALTER TABLE llm.queue ADD CONSTRAINT queue_status_check
    CHECK (status IN ('pending', 'running', 'submitted', 'done', 'failed'));
DROP INDEX llm.queue_ready;
CREATE INDEX queue_ready ON llm.queue (enqueued_by, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'realtime';
CREATE INDEX queue_batch_ready ON llm.queue (model, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'batch_api';
CREATE INDEX queue_batch ON llm.queue (batch_id) WHERE status = 'submitted';
DROP INDEX llm.queue_job;
CREATE INDEX queue_job ON llm.queue (job, target_key, id) INCLUDE (status) WHERE job IS NOT NULL;

-- models: the share of the prices a batch request costs; jobs: how their
-- items are sent
ALTER TABLE llm.model ADD COLUMN batch_price_factor numeric NOT NULL DEFAULT 0.5
    CHECK (batch_price_factor >= 0);
ALTER TABLE llm.job ADD COLUMN via text NOT NULL DEFAULT 'realtime' CHECK (via IN ('realtime', 'batch_api'));

-- budgets: a cap on queued items
ALTER TABLE llm.budget ADD COLUMN max_queued bigint CHECK (max_queued >= 0);

-- functions and views whose arguments, results or columns changed: the
-- privileges administrators granted on them are kept, to be granted again
-- on the new ones (0.1.0--0.2.0-after.sql)
SELECT pg_catalog.set_config('pg_llm.upgrade_grants', coalesce((
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'kind', g.kind, 'name', g.name, 'grantee', g.grantee, 'privilege', g.privilege))
    FROM (SELECT 'function' AS kind, p.proname::text AS name, a.grantee, a.privilege_type AS privilege
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
          WHERE p.pronamespace = 'llm'::regnamespace
            AND p.proname IN ('set_budget', 'usage_buffer_status', 'enqueue', 'create_job',
                              'add_model', 'purge_queue', 'drop_job', 'cost_report')
          UNION ALL
          SELECT 'view', c.relname::text, a.grantee, a.privilege_type
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
          WHERE c.relnamespace = 'llm'::regnamespace AND c.relname IN ('budgets', 'job_status')) g
    WHERE g.grantee <> 0 AND g.grantee <> (SELECT e.extowner FROM pg_catalog.pg_extension e
                                          WHERE e.extname = 'pg_llm')), '[]')::text, true);
DROP VIEW llm.budgets;
DROP VIEW llm.job_status;
DROP FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb);
DROP FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean);
DROP FUNCTION llm.add_model(text, text, text, integer, numeric, numeric);
DROP FUNCTION llm.purge_queue(interval);
DROP FUNCTION llm.drop_job(text);
DROP FUNCTION llm.cost_report(timestamptz, timestamptz);
DROP FUNCTION llm.set_budget(regrole, numeric, bigint);
DROP FUNCTION llm.usage_buffer_status();
DROP FUNCTION llm._job_text_like(oid);
