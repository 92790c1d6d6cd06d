-- Jobs: a job is known by its id, and nothing of it is its owner's.  At
-- 0.2.0 each job had functions of its own, two of them owned by the job's
-- owner (who could alter them, and have a superuser run them): they are
-- dropped with the triggers that call them (after-jobs.sql gives each job
-- its triggers again, calling llm._job_trigger with the job's id), as are
-- the functions that made them.
DO $$
DECLARE
    f regprocedure;
    tg record;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'llm'::regnamespace
               AND ((p.proname ~ '^_job_.+_(run|trigger)$' AND p.pronargs = 0)
                    OR (p.proname ~ '^_job_.+_sink$' AND p.pronargs = 3)) LOOP
        FOR tg IN SELECT t.tgname, t.tgrelid::regclass AS rel FROM pg_catalog.pg_trigger t
                  WHERE t.tgfoid = f AND t.tgparentid = 0 LOOP
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', tg.tgname, tg.rel);
        END LOOP;
        EXECUTE pg_catalog.format('DROP FUNCTION %s', f);
    END LOOP;
END;
$$;
DROP TRIGGER install ON llm.job;
DROP FUNCTION llm._job_install();
DROP FUNCTION llm._job_sink(text, text[], jsonb[], boolean);
DROP FUNCTION llm._job_restrict(regprocedure, regrole);
DROP FUNCTION llm._job_loop_sql(llm.job, text, boolean);

-- the job's identity; the name stays unique among the jobs there are
ALTER TABLE llm.job ADD COLUMN id bigserial;
ALTER TABLE llm.job DROP CONSTRAINT job_pkey;
ALTER TABLE llm.job ADD CONSTRAINT job_pkey PRIMARY KEY (id);
ALTER TABLE llm.job ALTER COLUMN name SET NOT NULL;
ALTER TABLE llm.job ADD CONSTRAINT job_name_key UNIQUE (name);
SELECT pg_catalog.pg_extension_config_dump('llm.job_id_seq', '');
COMMENT ON COLUMN llm.job.id IS 'The job''s identity: its items and triggers refer to it (a name can be used again once the job is dropped)';

-- a job's items carry its id: those of a job there is go to it (they are
-- its owner's); those of a job dropped before the update get one id for
-- each name and role, which no job has
ALTER TABLE llm.queue ADD COLUMN job_id bigint;
DROP INDEX llm.queue_job;
DROP INDEX llm.queue_job_key;
DROP INDEX llm.queue_job_finished;
UPDATE llm.queue q SET job_id = j.id FROM llm.job j WHERE q.job = j.name AND q.enqueued_by = j.owner::oid;
WITH o AS (SELECT DISTINCT q.job, q.enqueued_by FROM llm.queue q WHERE q.job IS NOT NULL AND q.job_id IS NULL),
     n AS (SELECT o.job, o.enqueued_by, pg_catalog.nextval('llm.job_id_seq') AS id FROM o)
UPDATE llm.queue q SET job_id = n.id FROM n
WHERE q.job = n.job AND q.enqueued_by = n.enqueued_by AND q.job_id IS NULL;
CREATE INDEX queue_job ON llm.queue (job_id, target_key, id) INCLUDE (status) WHERE job_id IS NOT NULL;
CREATE INDEX queue_job_key ON llm.queue USING hash (target_key)
    WHERE job_id IS NOT NULL AND status IN ('pending', 'running');
COMMENT ON INDEX llm.queue_job_key IS 'The pending and running items of jobs, by target row';
CREATE INDEX queue_job_finished ON llm.queue (job_id, status, finished_at)
    WHERE job_id IS NOT NULL AND finished_at IS NOT NULL;
COMMENT ON INDEX llm.queue_job_finished IS 'The finished items of jobs, by time';
COMMENT ON COLUMN llm.queue.job IS 'The name of the job that queued the item, when it was queued';
COMMENT ON COLUMN llm.queue.job_id IS 'The job that queued the item (llm.job.id): a job''s items are known by it, never by the name';
