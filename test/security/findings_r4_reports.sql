-- before: 7865b9f12d904515ba6c1712635e13f95bfab3c3 (pg_llm 0.2.0)
-- The fourth review's findings, about keys pasted where a name goes and
-- about what a report shows a role: a key given as api_key_env (shown in
-- the error, in the server log, in llm.provider, and at every call), and
-- a role with the grants of job_status reading, through a function of its
-- own in a WHERE clause, the names and owners of other roles' jobs.  One
-- script that runs on pg_llm 0.2.0 and later (it uses only what 0.2.0
-- had); each finding prints one line: its name, "safe" or "UNSAFE", and
-- what was seen.  test/security/before_after.sh runs it against the
-- commit above and the working tree.
\ir setup.sql
\getenv server_log PG_LLM_SERVER_LOG
SELECT llm.use_provider('mock') \g /dev/null

-- the outcome of a statement: 'ok', or its error (message, detail and hint)
CREATE FUNCTION try(query text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    m text;
    d text;
    h text;
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN m || coalesce(E'\nDETAIL: ' || nullif(d, ''), '') || coalesce(E'\nHINT: ' || nullif(h, ''), '');
END $$;
CREATE FUNCTION short(t text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN t IS NULL THEN 'NULL'
                ELSE left(replace(t, E'\n', ' '), 120) || CASE WHEN length(t) > 120 THEN '...' ELSE '' END END $$;
-- does the server log hold a text?
CREATE FUNCTION in_log(t text) RETURNS boolean LANGUAGE sql AS $$
    SELECT strpos(pg_read_file(current_setting('my.log')), t) > 0 $$;
SELECT set_config('my.log', :'server_log', false) \g /dev/null

-- 1. a key pasted as api_key_env, with a character no variable name has:
-- the error, and the statement in the server log
SELECT try($$SELECT llm.create_provider('pasted', 'openai', 'http://127.0.0.1:9/v1',
                                        api_key_env => 'sk-proj-PastedByMistake0123456789')$$) AS r \gset
SELECT 'a key pasted as api_key_env: the error',
       CASE WHEN :'r' LIKE '%PastedByMistake%' THEN 'UNSAFE' ELSE 'safe' END, short(:'r');
-- the same statement failing at the top level, as a client sends it
\o /dev/null
SELECT llm.create_provider('pasted', 'openai', 'http://127.0.0.1:9/v1',
                           api_key_env => 'sk-proj-PastedByMistake0123456789');
\o
SELECT pg_sleep(0.5) \g /dev/null
SELECT 'a key pasted as api_key_env: the server log',
       CASE WHEN in_log('PastedByMistake') THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN in_log('PastedByMistake') THEN 'the key is in the log' ELSE 'not in the log' END;

-- 2. one that is a valid variable name (letters, digits and "_"): stored
-- and shown to whoever may read llm.provider, warned about with it, and
-- named by every call's error
SELECT try($$SELECT llm.create_provider('pasted2', 'openai', 'http://127.0.0.1:9/v1',
                                        api_key_env => 'sk_live_4eC39HqLyjWDarjtT1zdp7dc')$$) AS r \gset
SELECT 'a key pasted as api_key_env that is a valid name: stored',
       CASE WHEN EXISTS (SELECT 1 FROM llm.provider WHERE api_key_env LIKE '%4eC39HqLyjWDarjtT1zdp7dc%')
            THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN EXISTS (SELECT 1 FROM llm.provider WHERE api_key_env LIKE '%4eC39HqLyjWDarjtT1zdp7dc%')
            THEN 'readable in llm.provider.api_key_env' ELSE 'refused: ' || short(:'r') END;
\o /dev/null
SELECT llm.create_provider('pasted2b', 'openai', 'http://127.0.0.1:9/v1',
                           api_key_env => 'sk_live_4eC39HqLyjWDarjtT1zdp7dc');
\o
SELECT pg_sleep(0.5) \g /dev/null
SELECT 'a key pasted as api_key_env that is a valid name: the server log',
       CASE WHEN in_log('4eC39HqLyjWDarjtT1zdp7dc') THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN in_log('4eC39HqLyjWDarjtT1zdp7dc') THEN 'the key is in the log' ELSE 'not in the log' END;
-- one stored before (by a version that took it): the calls' errors
SELECT llm.create_provider('pasted3', 'openai', 'http://127.0.0.1:9/v1') IS NULL \g /dev/null
UPDATE llm.provider SET api_key_env = 'sk_live_Stored0ByAnOlderVersion0123' WHERE name = 'pasted3';
SELECT llm.add_model('pasted3-model', 'pasted3', 'm') IS NULL \g /dev/null
SELECT try($$SELECT llm.chat('x', 'pasted3-model')$$) AS r \gset
SELECT 'a key stored as api_key_env: each call''s error',
       CASE WHEN :'r' LIKE '%Stored0ByAnOlderVersion%' THEN 'UNSAFE' ELSE 'safe' END, short(:'r');

-- 3. a role with the grants of job_status (the README's jobs grants) and
-- a cheap function of its own in the WHERE clause: which jobs does the
-- function see?  (An administrator's job, which it may not see.)
CREATE ROLE nosy LOGIN;
GRANT USAGE ON SCHEMA llm TO nosy;
GRANT SELECT ON llm.job, llm.job_status TO nosy;
CREATE TABLE victim_notes (id int PRIMARY KEY, body text, verdict text);
SELECT llm.add_model('judge', 'mock', 'm') IS NULL \g /dev/null
SELECT llm.create_job('acquisition-of-acme', 'victim_notes', '{id}', 'Judge: {body}', 'verdict',
                      model => 'judge', track_changes => false) IS NULL \g /dev/null
CREATE TABLE seen (who name, job text);
GRANT INSERT ON seen TO nosy;
CREATE FUNCTION peek(job text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    INSERT INTO public.seen VALUES (current_user, job);
    RETURN true;
END $$;
SET ROLE nosy;
SELECT count(*) FROM llm.job_status WHERE peek(job) \g /dev/null
RESET ROLE;
SELECT 'another role''s job, through a function in the WHERE clause of job_status',
       CASE WHEN EXISTS (SELECT 1 FROM seen WHERE job = 'acquisition-of-acme') THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN EXISTS (SELECT 1 FROM seen WHERE job = 'acquisition-of-acme')
            THEN 'its function saw job "acquisition-of-acme" of an administrator'
            ELSE 'its function saw ' || (SELECT count(*) FROM seen) || ' rows, none of another role ('
                 || (SELECT count(*) FROM llm.job) || ' job there)' END;
