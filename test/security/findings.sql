-- before: d4e23b5 (pg_llm 0.1.0)
-- The findings of the hostile-input review, as one script that runs on
-- any version of pg_llm from 0.1.0 on (it uses only what 0.1.0 had).  Each
-- finding prints one line: its name, "safe" or "UNSAFE", and what was seen.
-- test/security/before_after.sh runs it against an earlier commit and the
-- working tree.  The server must preload pg_llm with a worker for this
-- database; psql variable openai_url points at the mock provider.
\ir setup.sql
SELECT llm.use_provider('mock') \g /dev/null

-- the outcome of a statement: 'ok', or its error message
CREATE FUNCTION try(query text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
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
CREATE ROLE nobody LOGIN;
CREATE SCHEMA mal AUTHORIZATION mallory;
GRANT USAGE ON SCHEMA llm TO mallory, nobody;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA llm TO mallory, nobody;
-- databases created before PostgreSQL 15 let PUBLIC create in public
GRANT CREATE ON SCHEMA public TO PUBLIC;
-- every planted function records who ran it here
CREATE TABLE ran (who name, what text);
GRANT INSERT ON ran TO PUBLIC;

-- 1. look-alikes in mallory's own schema, first in its search_path, while
-- it calls llm.chat (the configuration is loaded as the extension owner)
SET ROLE mallory;
CREATE FUNCTION mal.jsonb_each_text(jsonb, OUT key text, OUT value text) RETURNS SETOF record
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran VALUES (current_user, 'jsonb_each_text');
    RETURN QUERY SELECT * FROM pg_catalog.jsonb_each_text($1);
END $$;
CREATE FUNCTION mal.get_text(jsonb, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran VALUES (current_user, '->>');
    RETURN pg_catalog.jsonb_object_field_text($1, $2);
END $$;
CREATE OPERATOR mal.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = mal.get_text);
SET search_path = mal, pg_catalog;
SELECT llm.chat('hi', 'mock') \g /dev/null
RESET search_path;
RESET ROLE;

-- 2. a role with no pg_llm rights at all plants make_interval(integer) in
-- public, where the worker's claim looked
SET ROLE nobody;
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran VALUES (current_user, 'make_interval');
    RETURN pg_catalog.make_interval(secs => secs::float8);
END $$;
RESET ROLE;

-- 3. an exact-type jsonb_populate_record for a victim table's row type,
-- where the write-back (run as the enqueuing role) looked
CREATE TABLE victim (id int PRIMARY KEY, note text, code char(10));
INSERT INTO victim VALUES (1, NULL, NULL), (2, NULL, NULL);
SET ROLE mallory;
CREATE FUNCTION public.jsonb_populate_record(public.victim, jsonb) RETURNS public.victim
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.ran VALUES (current_user, 'jsonb_populate_record');
    RETURN pg_catalog.jsonb_populate_record($1, $2);
END $$;
RESET ROLE;
SELECT llm.enqueue('write a note', 'mock', target_table => 'victim', target_column => 'note',
                   target_key => '{"id": 1}') \g /dev/null
-- 5. a reply written into char(10)
SELECT llm.enqueue('a long reply please', 'mock', target_table => 'victim', target_column => 'code',
                   target_key => '{"id": 2}') \g /dev/null
-- a dropped role's item
CREATE ROLE leaver LOGIN;
GRANT USAGE ON SCHEMA llm TO leaver;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA llm TO leaver;
BEGIN;
SET LOCAL ROLE leaver;
SELECT llm.enqueue('from a role about to go', 'mock') \g /dev/null
RESET ROLE;
REVOKE ALL ON SCHEMA llm FROM leaver;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM leaver;
DROP ROLE leaver;
COMMIT;
SELECT wait_queue(20) \g /dev/null

SELECT 'search_path: look-alikes planted by a caller or in public',
       CASE WHEN count(*) = 0 THEN 'safe' ELSE 'UNSAFE' END,
       coalesce(string_agg(DISTINCT who || ' ran ' || what, ', '), 'nothing planted ran')
FROM ran;
SELECT 'char(10) target',
       CASE WHEN code IS NULL AND q.status = 'failed' THEN 'safe' ELSE 'UNSAFE' END,
       'the column holds ' || coalesce(quote_literal(code), 'NULL') || ', the item is ' || q.status
FROM victim, llm.queue q WHERE victim.id = 2 AND q.target_column = 'code';
SELECT 'a dropped role''s item',
       CASE WHEN status = 'failed' THEN 'safe' ELSE 'UNSAFE' END,
       'the item is ' || status || coalesce(' (' || error || ')', ' (sent and billed)')
FROM llm.queue WHERE prompt = 'from a role about to go';

-- 6. a USD budget, and a model without a route or a price
SELECT llm.set_budget('mallory', 0.001) \g /dev/null
SET ROLE mallory;
SELECT try($$SELECT llm.chat('hi', 'no-route-model', options => '{"max_tokens": 1000}')$$) AS r \gset
RESET ROLE;
SELECT 'USD budget and an unpriced model',
       CASE WHEN :'r' = 'ok' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN :'r' = 'ok' THEN 'the call was answered' ELSE 'refused: ' || :'r' END;

-- header injection, secret headers, numbers out of range
SELECT try($$SELECT llm.create_provider('crlf', 'openai', 'http://127.0.0.1:1/v1', api_key => E'sk-a\r\nX-Injected: 1')$$) AS r \gset
SELECT 'api_key with CR/LF', CASE WHEN :'r' = 'ok' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN :'r' = 'ok' THEN 'accepted' ELSE 'refused: ' || :'r' END;
SELECT try($$SELECT llm.create_provider('azure', 'openai', 'http://127.0.0.1:1/v1', options => '{"headers": {"api-key": "secret-7731"}}')$$) AS r \gset
SELECT 'a secret in a provider header',
       CASE WHEN p::text LIKE '%secret-7731%' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN p::text LIKE '%secret-7731%' THEN 'shown in llm.provider' ELSE 'not shown in llm.provider (' || :'r' || ')' END
FROM (SELECT (SELECT array_agg(x) FROM llm.provider x) AS p) s;
SELECT try($$SELECT llm.chat('hi', 'mock', options => '{"max_tokens": 1e30}')$$) AS r \gset
SELECT 'max_tokens 1e30', CASE WHEN :'r' = 'ok' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN :'r' = 'ok' THEN 'accepted' ELSE 'refused: ' || :'r' END;

-- 4. last, as it may take the server down: a non-admin's target table
-- dropped in the transaction that enqueued into it
GRANT CREATE ON SCHEMA public TO nobody;
SET ROLE nobody;
CREATE TABLE public.gone (id int PRIMARY KEY, note text);
INSERT INTO public.gone VALUES (1, NULL);
BEGIN;
SELECT llm.enqueue('into a table about to go', 'mock', target_table => 'public.gone',
                   target_column => 'note', target_key => '{"id": 1}') \g /dev/null
DROP TABLE public.gone;
COMMIT;
RESET ROLE;
SELECT pg_sleep(5) \g /dev/null
