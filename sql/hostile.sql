-- Hostile and careless inputs: a role that plants look-alike functions and
-- operators where pg_llm might resolve names, and targets, numbers and
-- keys that cannot work.  Nothing planted may ever run: every planted
-- object records who ran it in mal.ran, which must stay empty.
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
\set VERBOSITY default
CREATE ROLE regress_llm_mallory LOGIN;
CREATE SCHEMA mal AUTHORIZATION regress_llm_mallory;
GRANT USAGE ON SCHEMA llm TO regress_llm_mallory;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb),
                          llm.chat_completion(jsonb, text),
                          llm.chat_stream(text, text, text, jsonb),
                          llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO regress_llm_mallory;
-- the reports, over her own rows (the README's grants)
GRANT SELECT ON llm.usage, llm.usage_log, llm.usage_summary, llm.queue_status, llm.model TO regress_llm_mallory;
GRANT EXECUTE ON FUNCTION llm.usage_summary(text, timestamptz, timestamptz),
                          llm.cost_report(text, timestamptz, timestamptz, text) TO regress_llm_mallory;
-- databases created before PostgreSQL 15 (and upgraded) let PUBLIC create
-- in public
GRANT CREATE ON SCHEMA public TO PUBLIC;

SET ROLE regress_llm_mallory;
CREATE TABLE mal.ran (who name, what text);
GRANT USAGE ON SCHEMA mal TO PUBLIC;
GRANT INSERT ON mal.ran TO PUBLIC;
-- look-alikes of what pg_llm's own SQL uses, each recording who ran it
CREATE FUNCTION mal.jsonb_each_text(jsonb, OUT key text, OUT value text) RETURNS SETOF record
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'jsonb_each_text');
    RETURN QUERY SELECT * FROM pg_catalog.jsonb_each_text($1);
END $$;
CREATE FUNCTION mal.get_text(jsonb, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, '->>');
    RETURN pg_catalog.jsonb_object_field_text($1, $2);
END $$;
CREATE OPERATOR mal.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = mal.get_text);
CREATE FUNCTION mal.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'text =');
    RETURN pg_catalog.texteq($1, $2);
END $$;
CREATE OPERATOR mal.= (LEFTARG = text, RIGHTARG = text, FUNCTION = mal.text_eq);
CREATE FUNCTION mal.oid_eq(oid, oid) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'oid =');
    RETURN pg_catalog.oideq($1, $2);
END $$;
CREATE OPERATOR mal.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = mal.oid_eq);
CREATE FUNCTION mal.text_cat(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, '||');
    RETURN pg_catalog.textcat($1, $2);
END $$;
CREATE OPERATOR mal.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = mal.text_cat);
CREATE FUNCTION mal.date_trunc(text, timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'date_trunc');
    RETURN pg_catalog.date_trunc($1, $2);
END $$;
CREATE FUNCTION mal.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'now');
    RETURN pg_catalog.now();
END $$;
CREATE FUNCTION mal.jsonb_typeof(jsonb) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'jsonb_typeof');
    RETURN pg_catalog.jsonb_typeof($1);
END $$;
CREATE FUNCTION mal.rtrim(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'rtrim');
    RETURN pg_catalog.rtrim($1, $2);
END $$;
CREATE FUNCTION mal.lower(text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'lower');
    RETURN pg_catalog.lower($1);
END $$;
-- and in public, where the worker's default search_path looks: an exact
-- integer match beats pg_catalog's make_interval(..., secs double precision)
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'make_interval');
    RETURN pg_catalog.make_interval(secs => secs::float8);
END $$;
RESET ROLE;

-- this file's own waiting never resolves a name through public
CREATE FUNCTION hostile_wait() RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        IF NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN ('pending', 'running')) THEN
            RETURN 'drained';
        END IF;
        IF clock_timestamp() - t0 > interval '60 seconds' THEN
            RETURN 'timed out';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT llm.add_model('hostile-priced', 'mock', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => 1);

-- a victim table, and mallory's own target
CREATE TABLE victim (id int PRIMARY KEY, note text);
INSERT INTO victim VALUES (1, NULL);
SET ROLE regress_llm_mallory;
CREATE TABLE mal.mine (id int PRIMARY KEY, note text);
INSERT INTO mal.mine VALUES (1, NULL);
-- an exact-type look-alike of jsonb_populate_record for the victim's row type
CREATE FUNCTION public.jsonb_populate_record(public.victim, jsonb) RETURNS public.victim
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mal.ran VALUES (current_user, 'jsonb_populate_record');
    RETURN pg_catalog.jsonb_populate_record($1, $2);
END $$;

-- 1. every entry point mallory may call, under a search_path that puts
-- mal first
SET search_path = mal, public, pg_catalog;
SELECT llm.chat('hi', 'mock');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "hi"}]}', 'mock') OPERATOR(pg_catalog.->>) 'provider' AS provider;
SELECT string_agg(c, '') FROM (SELECT llm.chat_stream('one two', 'mock') AS c) s;
SELECT llm.enqueue('mine', 'mock', target_table => 'mal.mine', target_column => 'note',
                   target_key => '{"id": 1}') > 0 AS queued;
SELECT count(*) > 0 AS read FROM llm.usage_summary;
SELECT count(*) > 0 AS read FROM llm.usage_summary(by => 'Job, tag');
SELECT count(*) > 0 AS read FROM llm.cost_report();
SELECT count(*) > 0 AS read FROM llm.cost_report('mock', by => 'tag');
SELECT count(*) > 0 AS read FROM llm.queue_status;
SELECT count(*) >= 0 AS read FROM llm.usage_log;
RESET search_path;
RESET ROLE;
-- (answered before mallory gets a budget in USD below, which the unpriced
-- mock would not pass)
SELECT public.hostile_wait();

-- 2. an administrator with the same search_path calling the configuration
-- functions, and enqueueing an item into the victim table
SET search_path = mal, public, pg_catalog;
SELECT llm.create_provider('hostile-test', 'openai', 'http://127.0.0.1:1/v1/', api_key => 'sk-x',
                           options => '{"timeout_ms": 1000}');
SELECT llm.alter_provider('hostile-test', options => '{"max_retries": 0}');
SELECT llm.add_model('hostile-model', 'hostile-test');
SELECT llm.set_budget('regress_llm_mallory', 100);
SELECT llm.current_provider();
SELECT llm.drop_model('hostile-model');
SELECT llm.drop_provider('hostile-test');
SELECT llm.enqueue('victim', 'mock', target_table => 'public.victim', target_column => 'note',
                   target_key => '{"id": 1}') > 0 AS queued;
SELECT count(*) > 0 AS read FROM llm.cost_report(by => 'job');
SELECT count(*) > 0 AS read FROM llm.usage_summary(by => 'tag');
SELECT count(*) >= 0 AS read FROM llm.job_status;
RESET search_path;
SELECT public.hostile_wait();
SELECT note FROM victim;
SELECT note FROM mal.mine;
-- mallory, now with a budget, calls once more (budgets are read as the owner)
SET ROLE regress_llm_mallory;
SET search_path = mal, public, pg_catalog;
SELECT llm.chat('hi', 'hostile-priced');
RESET search_path;
RESET ROLE;

-- nothing planted ever ran, as anybody
SELECT who, what FROM mal.ran;

-- every function of the extension that is not C pins its search_path, and
-- every function has a comment
SELECT p.oid::regprocedure AS unpinned
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'llm'::regnamespace AND l.lanname <> 'c'
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
ORDER BY 1;
SELECT p.oid::regprocedure AS uncommented
FROM pg_proc p
WHERE p.pronamespace = 'llm'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL
ORDER BY 1;

-- 3. a budget in USD is not bypassed through a model without prices
SELECT llm.set_budget('regress_llm_mallory', 0.001);
SET ROLE regress_llm_mallory;
SELECT llm.chat('hi', 'any-name-without-a-route');
SELECT llm.chat('hi', 'hostile-priced', options => '{"max_tokens": 1000}');
SELECT llm.chat('hi', 'hostile-priced', options => '{"max_tokens": 10}');
RESET ROLE;
SELECT llm.set_budget('regress_llm_mallory', NULL, 1000);
SET ROLE regress_llm_mallory;
-- a budget in calls only has nothing to price
SELECT llm.chat('hi', 'any-name-without-a-route');
RESET ROLE;
SELECT llm.set_budget('regress_llm_mallory', NULL, NULL);

-- 4. keys and headers: control characters are refused, header values are
-- secret like the key
\set VERBOSITY terse
SELECT llm.create_provider('crlf', 'openai', 'http://127.0.0.1:1/v1', api_key => E'sk-1\r\nX-Injected: 1');
SELECT llm.create_provider('crlf', 'openai', E'http://127.0.0.1:1/v1\nX: y');
SELECT llm.create_provider('crlf', 'openai', 'http://127.0.0.1:1/v1 x');
SELECT llm.create_provider('crlf', 'openai', 'http://127.0.0.1:1/v1', api_key_env => 'NOT A NAME');
SELECT llm.create_provider('crlf', 'openai', 'http://127.0.0.1:1/v1',
                           options => '{"headers": {"api-key": "a\u0001b"}}');
SELECT llm.create_provider('crlf', 'openai', 'http://127.0.0.1:1/v1',
                           options => '{"headers": {"Transfer-Encoding": "chunked"}}');
\set VERBOSITY default
SELECT llm.create_provider('azure', 'openai', 'http://127.0.0.1:1/v1',
                           options => '{"headers": {"api-key": "azure-secret-value", "X-Team": "t1"}, "max_retries": 0}');
SELECT name, has_api_key, options, headers FROM llm.provider WHERE name = 'azure';
SELECT count(*) AS leaks FROM llm.provider WHERE options::text LIKE '%azure-secret%';
SELECT llm.alter_provider('azure', options => '{"timeout_ms": 500}');
SELECT name, options, headers FROM llm.provider WHERE name = 'azure';
SELECT count(*) AS secrets_left FROM llm._provider_secret WHERE provider = 'azure';
SELECT llm.drop_provider('azure');

-- 5. numbers out of range and deep nesting
SELECT llm.chat('x', 'mock', options => '{"max_tokens": 1e30}');
SELECT llm.chat('x', 'mock', options => '{"seed": 1e400}');
SELECT llm.chat('x', 'mock', options => '{"n": 1000}');
-- a tool schema 40 levels deep is fine; 300 levels is not
SELECT llm.chat_completion(jsonb_build_object(
           'messages', '[{"role": "user", "content": "deep"}]'::jsonb,
           'tools', jsonb_build_array(jsonb_build_object('type', 'function', 'function',
               jsonb_build_object('name', 'f', 'parameters',
                   (repeat('{"a": ', 40) || '1' || repeat('}', 40))::jsonb)))), 'mock') -> 'choices' -> 0 -> 'message' ->> 'content' AS deep_tools;
SELECT llm.chat('x', 'mock', options => (repeat('{"a": ', 300) || '1' || repeat('}', 300))::jsonb);

-- 6. errors that name the right thing
SELECT llm.chat_completion('[]');
SELECT llm.chat('x', 'mock?fault=redirect');
SELECT string_agg(c, '') FROM (SELECT llm.chat_stream('a b', 'mock?fault=wrong_type') AS c) s;
SELECT string_agg(c, '') FROM (SELECT llm.chat_stream('a b', 'mock?fault=notjson') AS c) s;

-- 7. enqueue refuses targets that can never work, before anything is paid
CREATE TEMP TABLE tmp_target (id int PRIMARY KEY, note text);
INSERT INTO tmp_target VALUES (1, NULL);
SELECT llm.enqueue('x', 'mock', target_table => 'tmp_target', target_column => 'note', target_key => '{"id": 1}');
SELECT llm.enqueue('x', 'mock', target_table => 'victim', target_column => 'note', target_key => '{"id": "one"}');
SELECT llm.enqueue('x', 'mock', target_table => 'victim', target_column => 'note', target_key => '{"id": 99}');
SELECT llm.enqueue('x', 'mock', target_table => 'victim', target_column => 'note', target_key => '{"id": null}');
SELECT llm.enqueue('x', 'mock', target_table => 'victim', target_column => 'note', target_key => '{"id": [1]}');
-- a row hidden by row-level security does not exist for the enqueuer
CREATE TABLE rls_notes (id int PRIMARY KEY, owner name, note text);
INSERT INTO rls_notes VALUES (1, 'postgres', NULL), (2, 'regress_llm_mallory', NULL);
ALTER TABLE rls_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON rls_notes USING (owner = current_user);
GRANT SELECT, UPDATE ON rls_notes TO regress_llm_mallory;
SET ROLE regress_llm_mallory;
SELECT llm.enqueue('x', 'mock', target_table => 'public.rls_notes', target_column => 'note', target_key => '{"id": 1}');
SELECT llm.enqueue('x', 'mock', target_table => 'public.rls_notes', target_column => 'note', target_key => '{"id": 2}') > 0 AS queued;
RESET ROLE;
SELECT public.hostile_wait();
SELECT id, note FROM rls_notes ORDER BY id;

-- 8. a reply is written with its column's type and typmod; what does not
-- fit fails its item, the table untouched and the reply kept
CREATE TYPE mood AS ENUM ('positive', 'negative', 'neutral');
CREATE DOMAIN short_word AS text CHECK (length(VALUE) <= 5);
CREATE TABLE typed (id int PRIMARY KEY, c char(5), v varchar(3), n numeric(5, 2),
                    d short_word, a int[], e mood, b boolean);
INSERT INTO typed (id) SELECT g FROM generate_series(1, 2) g;
SELECT count(*) FROM (VALUES
    (llm.enqueue('x', 'mock?reply=abc', target_table => 'typed', target_column => 'c', target_key => '{"id": 1}')),
    (llm.enqueue('x', 'mock?reply=abcdefgh', target_table => 'typed', target_column => 'c', target_key => '{"id": 2}')),
    (llm.enqueue('x', 'mock?reply=ab', target_table => 'typed', target_column => 'v', target_key => '{"id": 1}')),
    (llm.enqueue('x', 'mock?reply=abcd', target_table => 'typed', target_column => 'v', target_key => '{"id": 2}')),
    (llm.enqueue('x', 'mock?reply=123.456', target_table => 'typed', target_column => 'n', target_key => '{"id": 1}')),
    (llm.enqueue('x', 'mock?reply=123456', target_table => 'typed', target_column => 'n', target_key => '{"id": 2}')),
    (llm.enqueue('x', 'mock?reply=short', target_table => 'typed', target_column => 'd', target_key => '{"id": 1}')),
    (llm.enqueue('x', 'mock?reply=too+long', target_table => 'typed', target_column => 'd', target_key => '{"id": 2}')),
    (llm.enqueue('x', 'mock?reply=%7B1%2C2%7D', target_table => 'typed', target_column => 'a', target_key => '{"id": 1}')),
    (llm.enqueue('x', 'mock?reply=one+two', target_table => 'typed', target_column => 'a', target_key => '{"id": 2}')),
    (llm.enqueue('x', 'mock?reply=+positive%0A', target_table => 'typed', target_column => 'e', target_key => '{"id": 1}')),
    (llm.enqueue('x', 'mock?reply=happy', target_table => 'typed', target_column => 'e', target_key => '{"id": 2}')),
    (llm.enqueue('x', 'mock?reply=true', target_table => 'typed', target_column => 'b', target_key => '{"id": 1}'))) v;
SELECT public.hostile_wait();
SELECT * FROM typed ORDER BY id;
SELECT target_column, target_key ->> 'id' AS id, status, reply, error
FROM llm.queue WHERE target_table = 'typed'::regclass ORDER BY target_column, id;

-- 9. the items of a role dropped after enqueueing fail; they are not sent
CREATE ROLE regress_llm_transient;
GRANT USAGE ON SCHEMA llm TO regress_llm_transient;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO regress_llm_transient;
-- hold the worker off while the role goes away
BEGIN;
LOCK TABLE llm.queue IN SHARE ROW EXCLUSIVE MODE;
SET LOCAL ROLE regress_llm_transient;
SELECT llm.enqueue('orphan', 'mock') > 0 AS queued;
RESET ROLE;
REVOKE ALL ON SCHEMA llm FROM regress_llm_transient;
REVOKE ALL ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) FROM regress_llm_transient;
DROP ROLE regress_llm_transient;
COMMIT;
SELECT public.hostile_wait();
SELECT status, error FROM llm.queue WHERE prompt = 'orphan';

-- 10. an administrator can cap a role's queued items
SELECT llm.set_budget('regress_llm_mallory', NULL, NULL, max_queued => 2);
SET ROLE regress_llm_mallory;
BEGIN;
SELECT llm.enqueue('cap 1', 'mock') > 0 AS queued;
SELECT llm.enqueue('cap 2', 'mock') > 0 AS queued;
SELECT llm.enqueue('cap 3', 'mock') > 0 AS queued;
ROLLBACK;
RESET ROLE;
SELECT * FROM llm.budgets WHERE role = 'regress_llm_mallory'::regrole;
SELECT llm.set_budget('regress_llm_mallory', NULL, NULL, NULL);

-- 11. enqueue refuses what the write-back could never do, before anything
-- is paid: a row an UPDATE policy hides, an identity column GENERATED
-- ALWAYS, a table in a schema the role may not use (a clear error, not a
-- position in internal SQL); and a table others inherit from gets one row
CREATE TABLE pol (id int PRIMARY KEY, owner name, note text);
INSERT INTO pol VALUES (1, 'postgres', NULL), (2, 'regress_llm_mallory', NULL);
ALTER TABLE pol ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON pol FOR SELECT USING (true);
CREATE POLICY owner_updates ON pol FOR UPDATE USING (owner = current_user);
CREATE TABLE ident (id int PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY, d int GENERATED BY DEFAULT AS IDENTITY);
INSERT INTO ident (id) VALUES (1);
CREATE SCHEMA hidden;
CREATE TABLE hidden.t (id int PRIMARY KEY, note text);
INSERT INTO hidden.t VALUES (1, NULL);
GRANT SELECT, UPDATE ON pol, ident, hidden.t TO regress_llm_mallory;
SELECT 'hidden.t'::regclass::oid AS hidden_t \gset
SET ROLE regress_llm_mallory;
SELECT llm.enqueue('x', 'mock', target_table => 'public.pol', target_column => 'note', target_key => '{"id": 1}');
BEGIN;
SELECT llm.enqueue('x', 'mock', target_table => 'public.pol', target_column => 'note', target_key => '{"id": 2}') > 0 AS queued;
SELECT llm.enqueue('x', 'mock', target_table => 'public.ident', target_column => 'n', target_key => '{"id": 1}');
ROLLBACK;
BEGIN;
SELECT llm.enqueue('x', 'mock', target_table => 'public.ident', target_column => 'd', target_key => '{"id": 1}') > 0 AS queued;
ROLLBACK;
SELECT llm.enqueue('x', 'mock', target_table => :hidden_t::oid::regclass, target_column => 'note', target_key => '{"id": 1}');
RESET ROLE;
CREATE TABLE parent (id int PRIMARY KEY, note text);
CREATE TABLE child () INHERITS (parent);
INSERT INTO parent VALUES (1, NULL);
INSERT INTO child VALUES (1, NULL), (1, NULL);
SELECT llm.enqueue('one row', 'mock', target_table => 'parent', target_column => 'note', target_key => '{"id": 1}') > 0 AS queued;
SELECT public.hostile_wait();
SELECT tableoid::regclass, id, note FROM parent ORDER BY 1, 3;

-- 12. jobs: nothing of a job is its owner's, and whoever runs it (here a
-- superuser, as pg_cron or a maintenance script), its work runs as its
-- owner, in a security-restricted operation with search_path pinned
GRANT EXECUTE ON FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text, text, text),
                          llm.run_job(text), llm.drop_job(text, boolean) TO regress_llm_mallory;
GRANT SELECT ON llm.job, llm.job_status, llm.queue TO regress_llm_mallory;
-- (the grant of 0.2.0, which jobs no longer need)
GRANT INSERT, DELETE ON llm.job TO regress_llm_mallory;
SET ROLE regress_llm_mallory;
CREATE TABLE mal.src (id int PRIMARY KEY, body text);
CREATE TABLE mal.res (id int PRIMARY KEY, summary text);
CREATE TABLE mal.seen (who name, path text, temp text);
GRANT INSERT ON mal.src TO PUBLIC;
-- the result table's trigger runs whenever the job adds a key row there
CREATE FUNCTION mal.watch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t text := 'created';
BEGIN
    BEGIN
        CREATE TEMP TABLE mal_temp (x int);
    EXCEPTION WHEN OTHERS THEN
        t := SQLERRM;
    END;
    INSERT INTO mal.seen VALUES (current_user, current_setting('search_path'), t);
    RETURN NEW;
END $$;
CREATE TRIGGER watch AFTER INSERT ON mal.res FOR EACH ROW EXECUTE FUNCTION mal.watch();
INSERT INTO mal.src VALUES (1, 'one');
SELECT llm.create_job('mjob', 'mal.src', '{id}', 'Summarize: {body}', 'summary', 'mal.res', model => 'mock');
SELECT p.oid::regprocedure AS mine FROM pg_proc p
WHERE p.pronamespace = 'llm'::regnamespace AND p.proowner = 'regress_llm_mallory'::regrole;
SELECT p.oid::regprocedure AS callable_internal FROM pg_proc p
WHERE p.pronamespace = 'llm'::regnamespace AND p.proname LIKE '\_%'
  AND has_function_privilege('regress_llm_mallory', p.oid, 'EXECUTE');
-- jobs are created by create_job only, whatever was granted on llm.job
INSERT INTO llm.job (id, name, source_table, key_columns, prompt_template, result_column, model)
VALUES (-1, 'direct', 'mal.src', '{id}', '{body}', 'summary', 'mock');
-- and a job's run lock is a lock on its row of llm.job, which no role
-- with the jobs' grants may take
SELECT 1 FROM llm.job WHERE name = 'mjob' FOR NO KEY UPDATE;
RESET ROLE;
SET search_path = mal, public, pg_catalog;
SELECT llm.run_job('mjob');
INSERT INTO mal.src VALUES (2, 'two');
RESET search_path;
SELECT who, path, temp FROM mal.seen;
SELECT public.hostile_wait();
SELECT id, summary FROM mal.res ORDER BY id;
SELECT job, enqueued_by::regrole, status FROM llm.queue WHERE job = 'mjob' ORDER BY id;

-- a source table that others inherit from: the job reads its own rows
SET ROLE regress_llm_mallory;
CREATE TABLE mal.base (id int PRIMARY KEY, body text, summary text);
CREATE TABLE mal.derived () INHERITS (mal.base);
INSERT INTO mal.base VALUES (1, 'base', NULL);
INSERT INTO mal.derived VALUES (2, 'derived', NULL);
SELECT llm.create_job('mbase', 'mal.base', '{id}', 'Summarize: {body}', 'summary', model => 'mock',
                      track_changes => false);
SELECT llm.run_job('mbase');
RESET ROLE;
SELECT public.hostile_wait();
SELECT tableoid::regclass, id, summary FROM mal.base ORDER BY id;

-- the owner's cap on queued items holds for jobs too: run_job and the
-- triggers queue up to it, with a warning
SELECT llm.set_budget('regress_llm_mallory', NULL, NULL, max_queued => 2);
SET ROLE regress_llm_mallory;
BEGIN;
INSERT INTO mal.base SELECT g, 'more ' || g, NULL FROM generate_series(3, 10) g;
SELECT llm.run_job('mbase');
INSERT INTO mal.src SELECT g, 'more ' || g FROM generate_series(3, 10) g;
SELECT job, count(*) FROM llm.queue WHERE status = 'pending' GROUP BY job ORDER BY job;
ROLLBACK;
RESET ROLE;
SELECT llm.set_budget('regress_llm_mallory', NULL, NULL, NULL);

-- with row-level security on the result table, a row the owner may read
-- but not update is not sent for (the triggers' rows, run_job's)
SET ROLE regress_llm_mallory;
ALTER TABLE mal.res ENABLE ROW LEVEL SECURITY;
ALTER TABLE mal.res FORCE ROW LEVEL SECURITY;
CREATE POLICY res_read ON mal.res FOR SELECT USING (true);
CREATE POLICY res_add ON mal.res FOR INSERT WITH CHECK (true);
CREATE POLICY res_update ON mal.res FOR UPDATE USING (id <> 20);
BEGIN;
INSERT INTO mal.src VALUES (20, 'twenty'), (21, 'twenty-one');
UPDATE mal.src SET body = body || '!' WHERE id IN (20, 21);
SELECT llm.run_job('mjob');
SELECT target_key, prompt FROM llm.queue WHERE job = 'mjob' AND status = 'pending' ORDER BY id;
ROLLBACK;
DROP POLICY res_read ON mal.res;
DROP POLICY res_add ON mal.res;
DROP POLICY res_update ON mal.res;
ALTER TABLE mal.res NO FORCE ROW LEVEL SECURITY;
ALTER TABLE mal.res DISABLE ROW LEVEL SECURITY;
RESET ROLE;

-- an owner who may no longer read the source table, or whom row-level
-- security put on it limits, gets none of its new rows
REVOKE SELECT ON mal.src FROM regress_llm_mallory;
INSERT INTO mal.src VALUES (11, 'not for regress_llm_mallory');
GRANT SELECT ON mal.src TO regress_llm_mallory;
ALTER TABLE mal.src ENABLE ROW LEVEL SECURITY;
ALTER TABLE mal.src FORCE ROW LEVEL SECURITY;
INSERT INTO mal.src VALUES (12, 'not for regress_llm_mallory either');
ALTER TABLE mal.src NO FORCE ROW LEVEL SECURITY;
ALTER TABLE mal.src DISABLE ROW LEVEL SECURITY;
SELECT count(*) AS queued FROM llm.queue WHERE prompt LIKE '%not for regress_llm_mallory%';

-- job names: a job is its id.  The victim's job, dropped without cancel
-- while its items are pending, and mallory's job of the same name: she
-- sees nothing of the victim's items, and replaces and cancels none of them
CREATE ROLE regress_llm_hostile_victim;
GRANT USAGE ON SCHEMA llm TO regress_llm_hostile_victim;
GRANT EXECUTE ON FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text, text, text),
                          llm.run_job(text), llm.drop_job(text, boolean) TO regress_llm_hostile_victim;
CREATE TABLE vdocs (id int PRIMARY KEY, body text, score int);
ALTER TABLE vdocs OWNER TO regress_llm_hostile_victim;
INSERT INTO vdocs VALUES (1, 'secret-1', NULL), (2, 'secret-2', NULL);
SET ROLE regress_llm_hostile_victim;
SELECT llm.create_job('same-name', 'vdocs', '{id}', 'Score: {body}', 'score', model => 'mock', track_changes => false);
SELECT llm.run_job('same-name');
RESET ROLE;
SELECT public.hostile_wait();
BEGIN;
LOCK TABLE llm.queue IN SHARE ROW EXCLUSIVE MODE;
SET LOCAL ROLE regress_llm_hostile_victim;
SELECT llm.run_job('same-name');
SELECT llm.drop_job('same-name');
RESET ROLE;
SET LOCAL ROLE regress_llm_mallory;
CREATE TABLE mal.mdocs (id int PRIMARY KEY, body text, score int);
SELECT llm.create_job('same-name', 'mal.mdocs', '{id}', 'Mine: {body}', 'score', model => 'mock');
SELECT job, pending, failed, last_error FROM llm.job_status WHERE job = 'same-name';
INSERT INTO mal.mdocs VALUES (1, 'mine', NULL);
SELECT llm.drop_job('same-name', cancel => true);
RESET ROLE;
SELECT enqueued_by::regrole, status, count(*) FROM llm.queue WHERE job = 'same-name'
GROUP BY 1, 2 ORDER BY 1, 2;
ROLLBACK;

-- llm.retry puts back only the caller's own failed items: another role's
-- ids reach nothing, and neither does a retry of everything (review 3,
-- the worker); a provider the model has no route on is refused before
-- anything is queued
GRANT EXECUTE ON FUNCTION llm.retry(bigint[], text, text) TO regress_llm_mallory;
INSERT INTO llm.queue (prompt, model, enqueued_by, status, error, reply, answered)
VALUES ('paid for', 'mock', 'regress_llm_hostile_victim'::regrole, 'failed', 'the reply could not be written back: x',
        'a reply', true)
RETURNING id AS victim_item \gset
SET ROLE regress_llm_mallory;
SELECT llm.retry(ARRAY[:victim_item]::bigint[]) AS retried_by_id;
SELECT llm.retry() AS retried_all;
SELECT llm.retry(job => 'vjob') AS retried_by_job;
SELECT llm.enqueue('x', 'mock', provider => 'nowhere');
RESET ROLE;
SELECT status, reply, answered FROM llm.queue WHERE id = :victim_item;
DELETE FROM llm.queue WHERE id = :victim_item;
REVOKE ALL ON FUNCTION llm.retry(bigint[], text, text) FROM regress_llm_mallory;

-- nothing planted ran during any of this either
SELECT who, what FROM mal.ran;

SELECT llm.drop_job('mjob'), llm.drop_job('mbase');
DROP TABLE pol, ident, parent, child, hidden.t, vdocs;
DROP SCHEMA hidden;
REVOKE ALL ON SCHEMA llm FROM regress_llm_hostile_victim;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM regress_llm_hostile_victim;
DROP ROLE regress_llm_hostile_victim;
REVOKE ALL ON llm.job, llm.job_status, llm.queue, llm.usage, llm.usage_log, llm.usage_summary, llm.queue_status, llm.model FROM regress_llm_mallory;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DROP FUNCTION public.make_interval(integer);
DROP FUNCTION public.jsonb_populate_record(public.victim, jsonb);
DROP SCHEMA mal CASCADE;
REVOKE ALL ON rls_notes FROM regress_llm_mallory;
DROP TABLE rls_notes, typed, victim;
DROP FUNCTION hostile_wait();
SELECT llm.drop_model('hostile-priced');
DROP TYPE mood;
DROP DOMAIN short_word;
REVOKE ALL ON SCHEMA llm FROM regress_llm_mallory;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM regress_llm_mallory;
DROP ROLE regress_llm_mallory;
