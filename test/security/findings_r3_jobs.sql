-- before: 7865b9f12d904515ba6c1712635e13f95bfab3c3 (pg_llm 0.2.0)
-- The third review's findings about jobs, the queue's entry points and
-- write-back targets, as one script that runs on 0.2.0 and on this tree.
-- The roles hold exactly the grants the README of 0.2.0 documents ("Privileges
-- and keys" and "To let a role use jobs"); the superuser stands for pg_cron
-- or a maintenance script.  Each finding prints its name, "safe" or
-- "UNSAFE", and what was seen.  test/security/before_after.sh runs it
-- against 0.2.0 and the working tree (psql variable openai_url: the mock).
\ir setup.sql
SELECT llm.use_provider('mock') \g /dev/null
-- the model the jobs name, known by name (model names are strict now)
SELECT llm.add_model('mock', 'mock', 'mock') \g /dev/null

-- the outcome of a statement: 'ok', or its error (with what else it says)
CREATE FUNCTION try(query text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END $$;
CREATE FUNCTION try_full(query text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    d text;
    h text;
    c text;
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
    RETURN SQLERRM || ' [detail: ' || coalesce(nullif(d, ''), '-') || '] [hint: ' || coalesce(nullif(h, ''), '-')
           || '] [context: ' || coalesce(nullif(replace(c, E'\n', ' / '), ''), '-') || ']';
END $$;
CREATE FUNCTION wait_queue(seconds int) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    WHILE EXISTS (SELECT 1 FROM llm.queue WHERE status IN ('pending', 'running'))
          AND clock_timestamp() - t0 < make_interval(secs => seconds) LOOP
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;

CREATE ROLE mallory LOGIN;
CREATE ROLE victim LOGIN;
CREATE ROLE writer LOGIN;
CREATE SCHEMA mal AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA mal TO PUBLIC;
-- the documented grants of 0.2.0
GRANT USAGE ON SCHEMA llm TO mallory, victim;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb),
                          llm.chat_completion(jsonb, text),
                          llm.chat_stream(text, text, text, jsonb),
                          llm.chat_many(text[], text, text, jsonb) TO mallory, victim;
-- llm.enqueue and llm.create_job, whatever their arguments are in the version at hand
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE pronamespace = 'llm'::regnamespace AND proname IN ('enqueue', 'create_job') LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO mallory, victim', f);
    END LOOP;
END $$;
GRANT SELECT ON llm.queue, llm.usage, llm.provider, llm.model TO mallory, victim;
GRANT EXECUTE ON FUNCTION llm.run_job(text), llm.drop_job(text, boolean) TO mallory, victim;
GRANT SELECT, INSERT, DELETE ON llm.job TO mallory, victim;
GRANT SELECT ON llm.job_status TO mallory, victim;
-- every planted function records who ran it here
CREATE TABLE ran (who name, what text);
GRANT INSERT ON ran TO PUBLIC;

-- 1. the job's run function made SECURITY INVOKER with mallory's schema
-- first in its path, and a hashtext(text) planted there; then a superuser
-- runs the job
SET ROLE mallory;
CREATE TABLE mal.docs (id int PRIMARY KEY, body text, summary text);
INSERT INTO mal.docs VALUES (1, 'one', NULL), (2, 'two', NULL);
SELECT llm.create_job('mjob', 'mal.docs', '{id}', 'Summarize: {body}', 'summary', model => 'mock',
                      track_changes => false) \g /dev/null
CREATE FUNCTION mal.hashtext(text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran VALUES (current_user, 'hashtext');
    BEGIN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN pg_catalog.hashtext($1);
END $$;
SELECT try($$ALTER FUNCTION llm._job_mjob_run() SECURITY INVOKER$$) || ', '
       || try($$ALTER FUNCTION llm._job_mjob_run() SET search_path = mal, pg_catalog$$) AS altered \gset
RESET ROLE;
SELECT try($$SELECT llm.run_job('mjob')$$) AS r \gset
SELECT 'a superuser''s run_job runs the job owner''s code (SECURITY INVOKER, planted hashtext)',
       CASE WHEN r.rolsuper OR EXISTS (SELECT 1 FROM ran WHERE who <> 'mallory') THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN r.rolsuper THEN 'mallory became superuser'
            ELSE 'mallory is not superuser' END
       || '; planted hashtext ran as: ' || coalesce((SELECT string_agg(DISTINCT who, ', ') FROM ran), 'nobody')
       || '; altering the run function: ' || :'altered' || '; run_job: ' || :'r'
FROM pg_roles r WHERE r.rolname = 'mallory';
ALTER ROLE mallory NOSUPERUSER;
DELETE FROM ran;

-- 2. the trigger variant: the job's trigger function made SECURITY INVOKER
-- with a planted array_append(text[], text) (an exact match beats
-- pg_catalog's polymorphic one); another role (here a superuser) writes
-- the source table
SET ROLE mallory;
CREATE TABLE mal.inbox (id int PRIMARY KEY, body text, summary text);
GRANT INSERT ON mal.inbox TO PUBLIC;
SELECT llm.create_job('minbox', 'mal.inbox', '{id}', 'Summarize: {body}', 'summary', model => 'mock') \g /dev/null
CREATE FUNCTION mal.array_append(text[], text) RETURNS text[] LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran VALUES (current_user, 'array_append');
    BEGIN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN pg_catalog.array_append($1, $2);
END $$;
SELECT try($$ALTER FUNCTION llm._job_minbox_trigger() SECURITY INVOKER$$) || ', '
       || try($$ALTER FUNCTION llm._job_minbox_trigger() SET search_path = mal, pg_catalog$$) AS altered \gset
RESET ROLE;
SELECT try($$INSERT INTO mal.inbox VALUES (1, 'hello', NULL)$$) AS r \gset
SELECT 'a write to a job''s source table runs the job owner''s code (SECURITY INVOKER trigger function)',
       CASE WHEN r.rolsuper OR EXISTS (SELECT 1 FROM ran WHERE who <> 'mallory') THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN r.rolsuper THEN 'mallory became superuser'
            ELSE 'mallory is not superuser' END
       || '; planted array_append ran as: ' || coalesce((SELECT string_agg(DISTINCT who, ', ') FROM ran), 'nobody')
       || '; altering the trigger function: ' || :'altered' || '; the insert: ' || :'r'
       || '; items queued for mallory: ' || (SELECT count(*) FROM llm.queue q WHERE q.enqueued_by = 'mallory'::regrole
                                              AND q.prompt = 'Summarize: hello')
FROM pg_roles r WHERE r.rolname = 'mallory';
ALTER ROLE mallory NOSUPERUSER;
DELETE FROM ran;

-- 3. internal functions a role with the documented grants may call, and
-- functions of the extension it owns (and may alter)
SELECT 'internal functions a job owner may call or alter',
       CASE WHEN count(*) = 0 THEN 'safe' ELSE 'UNSAFE' END,
       coalesce(string_agg(p.oid::regprocedure::text
                           || CASE WHEN p.proowner = 'mallory'::regrole THEN ' (owned by mallory)' ELSE '' END,
                           ', ' ORDER BY p.proname), 'none')
FROM pg_proc p
WHERE p.pronamespace = 'llm'::regnamespace AND p.proname LIKE '\_%'
  AND (has_function_privilege('mallory', p.oid, 'EXECUTE') OR p.proowner = 'mallory'::regrole);

-- 4. max_queued: the job's sink called directly, with any arrays
SELECT wait_queue(30) \g /dev/null
SELECT llm.set_budget('mallory', NULL, NULL, max_queued => 2) \g /dev/null
BEGIN;
SET LOCAL ROLE mallory;
SELECT try($$SELECT llm._job_mjob_sink(array_fill('from no table'::text, ARRAY[2000]),
                                       (SELECT array_agg(jsonb_build_object('id', g)) FROM generate_series(1, 2000) g),
                                       false)$$) AS r \gset
SELECT 'max_queued bypassed through the job''s sink',
       CASE WHEN count(*) > 2 THEN 'UNSAFE' ELSE 'safe' END,
       count(*) || ' items queued past a cap of 2; the call: ' || :'r'
FROM llm.queue WHERE prompt = 'from no table';
ROLLBACK;
-- and through run_job and the triggers
BEGIN;
SET LOCAL ROLE mallory;
INSERT INTO mal.docs SELECT g, 'doc ' || g, NULL FROM generate_series(3, 10) g;
SELECT try($$SELECT llm.run_job('mjob')$$) AS r \gset
INSERT INTO mal.inbox SELECT g, 'mail ' || g, NULL FROM generate_series(2, 10) g;
SELECT 'max_queued bypassed through run_job and a job''s triggers',
       CASE WHEN count(*) > 2 THEN 'UNSAFE' ELSE 'safe' END,
       count(*) || ' items of mallory pending under a cap of 2 (run_job: ' || :'r' || ')'
FROM llm.queue WHERE enqueued_by = 'mallory'::regrole AND status = 'pending';
ROLLBACK;
SELECT llm.set_budget('mallory', NULL, NULL, NULL) \g /dev/null

-- 5. a direct INSERT INTO llm.job (a documented grant) on a table the role
-- may not read
CREATE TABLE secrets (id int PRIMARY KEY, body text, note text);
INSERT INTO secrets VALUES (1, 'the secret', NULL);
SET ROLE mallory;
SELECT try($$INSERT INTO llm.job (name, source_table, key_columns, prompt_template, result_column, model)
             VALUES ('stolen', 'public.secrets', '{id}', 'Repeat: {body}', 'note', 'mock')$$) AS r \gset
-- (and with a job id of its own choosing, where jobs have one)
SELECT try($$INSERT INTO llm.job (id, name, source_table, key_columns, prompt_template, result_column, model)
             VALUES (-1, 'stolen', 'public.secrets', '{id}', 'Repeat: {body}', 'note', 'mock')$$) AS r2 \gset
RESET ROLE;
SELECT 'a direct INSERT INTO llm.job skips create_job''s checks',
       CASE WHEN :'r' = 'ok' OR :'r2' = 'ok' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN :'r' = 'ok' OR :'r2' = 'ok' THEN 'a job on a table mallory may not read was stored'
            ELSE 'refused: ' || :'r' || '; with an id: ' || :'r2' END;
DELETE FROM llm.job WHERE name = 'stolen';

-- 6. job names: the victim's job, with failed items (their error holds the
-- reply) and, later, items left pending by a drop without cancel; then
-- mallory's job of the same name
CREATE TABLE vdocs (id int PRIMARY KEY, body text, score int);
ALTER TABLE vdocs OWNER TO victim;
INSERT INTO vdocs VALUES (1, 'secret-4711', NULL), (2, 'secret-4712', NULL);
SET ROLE victim;
SELECT llm.create_job('vjob', 'vdocs', '{id}', 'Score: {body}', 'score', model => 'mock',
                      track_changes => false) \g /dev/null
SELECT llm.run_job('vjob') \g /dev/null
RESET ROLE;
SELECT wait_queue(30) \g /dev/null
BEGIN;
-- hold the worker off while the items are pending
LOCK TABLE llm.queue IN SHARE ROW EXCLUSIVE MODE;
SET LOCAL ROLE victim;
INSERT INTO vdocs VALUES (3, 'secret-4713', NULL), (4, 'secret-4714', NULL);
SELECT llm.run_job('vjob') \g /dev/null
SELECT llm.drop_job('vjob') \g /dev/null
RESET ROLE;
SELECT count(*) AS victim_pending FROM llm.queue WHERE enqueued_by = 'victim'::regrole AND status = 'pending' \gset
SET LOCAL ROLE mallory;
CREATE TABLE mal.mdocs (id int PRIMARY KEY, body text, score int);
SELECT try($$SELECT llm.create_job('vjob', 'mal.mdocs', '{id}', 'Mine: {body}', 'score', model => 'mock')$$) AS c \gset
SELECT coalesce((SELECT failed || ' failed, last error: ' || coalesce(last_error, '-')
                 FROM llm.job_status WHERE job = 'vjob'), 'no row') AS seen \gset
INSERT INTO mal.mdocs VALUES (3, 'mine', NULL);
RESET ROLE;
SELECT count(*) AS after_trigger FROM llm.queue WHERE enqueued_by = 'victim'::regrole AND status = 'pending' \gset
SET LOCAL ROLE mallory;
SELECT try($$SELECT llm.drop_job('vjob', cancel => true)$$) AS d \gset
RESET ROLE;
SELECT count(*) AS after_cancel FROM llm.queue WHERE enqueued_by = 'victim'::regrole AND status = 'pending' \gset
ROLLBACK;
SELECT 'job_status shows another role''s items through a job name',
       CASE WHEN :'seen' ~ 'secret' OR :'seen' !~ '^(0 failed|no row)' THEN 'UNSAFE' ELSE 'safe' END,
       'mallory''s job "vjob" (create_job: ' || :'c' || ') shows: ' || :'seen';
SELECT 'a same-named job''s trigger replaces another role''s pending item',
       CASE WHEN :after_trigger < :victim_pending THEN 'UNSAFE' ELSE 'safe' END,
       'the victim''s pending items: ' || :victim_pending || ', after mallory''s insert: ' || :after_trigger;
SELECT 'drop_job(cancel) of a same-named job deletes another role''s items',
       CASE WHEN :after_cancel < :after_trigger THEN 'UNSAFE' ELSE 'safe' END,
       'the victim''s pending items: ' || :after_trigger || ', after mallory''s drop_job(cancel => true): '
       || :after_cancel || ' (' || :'d' || ')';

-- 7. run_job's lock: mallory's write-back trigger takes the advisory lock
-- of the victim's job in the worker's session (which keeps it)
SET ROLE victim;
SELECT llm.create_job('vjob2', 'vdocs', '{id}', 'Score again: {body}', 'score', model => 'mock',
                      track_changes => false) \g /dev/null
RESET ROLE;
SET ROLE mallory;
CREATE TABLE mal.lockt (id int PRIMARY KEY, note text);
INSERT INTO mal.lockt VALUES (1, NULL);
CREATE FUNCTION mal.grab() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_advisory_lock(pg_catalog.hashtext('pg_llm job vjob2'));
    RETURN NEW;
END $$;
CREATE TRIGGER grab BEFORE UPDATE ON mal.lockt FOR EACH ROW EXECUTE FUNCTION mal.grab();
SELECT llm.enqueue('take the lock', 'mock', target_table => 'mal.lockt', target_column => 'note',
                   target_key => '{"id": 1}') \g /dev/null
RESET ROLE;
SELECT wait_queue(30) \g /dev/null
SET ROLE victim;
SET lock_timeout = '3s';
SELECT try($$SELECT llm.run_job('vjob2')$$) AS r \gset
RESET lock_timeout;
RESET ROLE;
SELECT 'another role''s code takes run_job''s lock (advisory lock on a hash of the name)',
       CASE WHEN :'r' ~ 'lock timeout' THEN 'UNSAFE' ELSE 'safe' END,
       'the victim''s run_job after mallory''s write-back trigger ran in the worker: ' || :'r';
SET ROLE victim;
SELECT llm.drop_job('vjob2', cancel => true) \g /dev/null
RESET ROLE;
SELECT wait_queue(30) \g /dev/null

-- 8. a job's owner who lost the right to read its source table: the
-- trigger reads the rows from its transition table, where no privilege is
-- checked
CREATE TABLE feed (id int PRIMARY KEY, body text, summary text);
GRANT SELECT, TRIGGER, UPDATE (summary) ON feed TO mallory;
GRANT INSERT ON feed TO writer;
SET ROLE mallory;
SELECT llm.create_job('mfeed', 'feed', '{id}', 'Summarize: {body}', 'summary', model => 'mock') \g /dev/null
RESET ROLE;
REVOKE SELECT ON feed FROM mallory;
SET ROLE writer;
INSERT INTO feed VALUES (1, 'secret-feed-0815', NULL);
RESET ROLE;
SELECT 'a job still reads its source table after its owner lost SELECT',
       CASE WHEN count(*) > 0 THEN 'UNSAFE' ELSE 'safe' END,
       count(*) || ' items of mallory carry a row she may not read'
FROM llm.queue WHERE enqueued_by = 'mallory'::regrole AND prompt LIKE '%secret-feed-0815%';
SELECT wait_queue(30) \g /dev/null

-- 9. enqueue: a row an UPDATE policy hides, identity and generated columns
CREATE TABLE pol (id int PRIMARY KEY, owner name, note text);
INSERT INTO pol VALUES (1, 'postgres', NULL);
ALTER TABLE pol ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON pol FOR SELECT USING (true);
CREATE POLICY owner_updates ON pol FOR UPDATE USING (owner = current_user);
GRANT SELECT, UPDATE ON pol TO mallory;
SET ROLE mallory;
SELECT try($$SELECT llm.enqueue('hidden for update', 'mock', target_table => 'public.pol', target_column => 'note',
                                target_key => '{"id": 1}')$$) AS r \gset
RESET ROLE;
SELECT 'enqueue into a row an UPDATE policy hides',
       CASE WHEN :'r' = 'ok' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN :'r' = 'ok' THEN 'accepted (the reply would be paid for and never written)'
            ELSE 'refused: ' || :'r' END;
CREATE TABLE gen (id int PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY, g text GENERATED ALWAYS AS ('x') STORED, note text);
INSERT INTO gen (id) VALUES (1);
GRANT SELECT, UPDATE ON gen TO mallory;
SET ROLE mallory;
SELECT try($$SELECT llm.enqueue('into an identity column', 'mock', target_table => 'public.gen', target_column => 'n',
                                target_key => '{"id": 1}')$$) AS r1 \gset
SELECT try($$SELECT llm.enqueue('into a generated column', 'mock', target_table => 'public.gen', target_column => 'g',
                                target_key => '{"id": 1}')$$) AS r2 \gset
RESET ROLE;
SELECT 'enqueue into a GENERATED ALWAYS column',
       CASE WHEN :'r1' = 'ok' OR :'r2' = 'ok' THEN 'UNSAFE' ELSE 'safe' END,
       'identity column GENERATED ALWAYS: ' || CASE WHEN :'r1' = 'ok' THEN 'accepted' ELSE 'refused (' || :'r1' || ')' END
       || '; generated column: ' || CASE WHEN :'r2' = 'ok' THEN 'accepted' ELSE 'refused (' || :'r2' || ')' END;
SELECT wait_queue(30) \g /dev/null

-- 10. an inheritance parent as target: one reply, one row
CREATE TABLE parent (id int PRIMARY KEY, note text);
CREATE TABLE child () INHERITS (parent);
INSERT INTO parent VALUES (1, NULL);
INSERT INTO child VALUES (1, NULL), (1, NULL);
SELECT llm.enqueue('one row', 'mock', target_table => 'parent', target_column => 'note', target_key => '{"id": 1}') \g /dev/null
SELECT wait_queue(30) \g /dev/null
SELECT 'an inheritance parent as target',
       CASE WHEN count(*) FILTER (WHERE note IS NOT NULL) = 1 THEN 'safe' ELSE 'UNSAFE' END,
       count(*) FILTER (WHERE note IS NOT NULL) || ' rows written for one reply ('
       || count(*) FILTER (WHERE note IS NOT NULL AND tableoid = 'child'::regclass) || ' of them in the child)'
FROM parent;

-- 11. a target in a schema without USAGE: the error names the schema, not a
-- position in internal SQL
CREATE SCHEMA hidden;
CREATE TABLE hidden.t (id int PRIMARY KEY, note text);
INSERT INTO hidden.t VALUES (1, NULL);
GRANT SELECT, UPDATE ON hidden.t TO mallory;
SELECT 'hidden.t'::regclass::oid AS hidden_t \gset
SET ROLE mallory;
SELECT try_full(format($$SELECT llm.enqueue('x', 'mock', target_table => %s::oid::regclass, target_column => 'note',
                                            target_key => '{"id": 1}')$$, :hidden_t)) AS r \gset
RESET ROLE;
-- (the one SQL statement of the context that may be there is try_full's own)
SELECT 'a target in a schema without USAGE: the error',
       CASE WHEN (length(:'r') - length(replace(:'r', 'SQL statement', ''))) / length('SQL statement') > 1
                 OR :'r' !~ 'hint: [^-]' THEN 'UNSAFE' ELSE 'safe' END,
       :'r';
