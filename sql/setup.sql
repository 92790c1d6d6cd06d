-- Install the extension and point providers at the local mock provider:
-- the one whose port the test runner exports as MOCK_PORT, or one started
-- here for this run (a plain make installcheck; the last test stops it).
-- The other tests take the mock's address from llm.provider.
-- Every role and database these tests create is named regress_llm_*: on
-- an instance that already has one, nothing runs (a test would alter or
-- drop it; make installcheck refuses before pg_regress starts, too).
SELECT pg_catalog.count(*) > 0 AS names_taken, pg_catalog.string_agg(name, ', ') AS taken_names
FROM (SELECT rolname::text AS name FROM pg_catalog.pg_roles
      UNION ALL SELECT datname::text FROM pg_catalog.pg_database) o
WHERE name LIKE 'regress\_llm\_%' \gset
\if :names_taken
\echo 'refusing to run:' :taken_names 'exist(s) already; these tests create and drop roles and databases named regress_llm_*'
\quit
\endif
\getenv mock_port MOCK_PORT
\if :{?mock_port}
\else
\set mock_port `bash test/regress_mock.sh start`
\endif
\set openai_url 'http://127.0.0.1:' :mock_port '/v1'
\set anthropic_url 'http://127.0.0.1:' :mock_port '/anthropic/v1'
-- the queue worker the suite needs: pg_llm preloaded, with a worker for
-- this database (test/regress.conf; test/regress.sh sets the same)
SELECT current_setting('shared_preload_libraries') ~ 'pg_llm' AS preloaded,
       current_database() = ANY (string_to_array(replace(current_setting('llm.database', true), ' ', ''), ',')) AS worker_here;
CREATE EXTENSION pg_llm;
SELECT e.extname, e.extversion, n.nspname, d.description
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
LEFT JOIN pg_description d ON d.objoid = e.oid AND d.classoid = 'pg_extension'::regclass
WHERE e.extname = 'pg_llm';
SELECT llm.create_provider('mock', 'openai', :'openai_url', api_key => 'sk-mock');
SELECT llm.create_provider('claude', 'anthropic', :'anthropic_url', api_key => 'sk-mock');
-- a relay that answers under other model names, used for fallback and switching
SELECT llm.create_provider('relay', 'openai', :'openai_url', api_key => 'sk-mock',
                           options => '{"max_retries": 0}');
SELECT llm.alter_provider('relay', priority => 200);
SELECT name, protocol, enabled, priority, has_api_key, api_key_env, options FROM llm.provider ORDER BY name;
SELECT llm.current_provider();
SELECT llm.use_provider('mock');
SELECT llm.current_provider();
-- the tests that wait for the worker poll with these: wait_until returns
-- its label once the condition (a query returning a boolean) holds
CREATE FUNCTION wait_until(condition text, label text, timeout_s int DEFAULT 60) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    ok boolean;
BEGIN
    LOOP
        EXECUTE condition INTO ok;
        IF ok THEN
            RETURN label;
        END IF;
        IF clock_timestamp() - t0 > make_interval(secs => timeout_s) THEN
            RETURN 'timed out';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END;
$$;
CREATE FUNCTION wait_queue() RETURNS text LANGUAGE sql AS $$
    SELECT wait_until('SELECT NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN (''pending'', ''running'', ''submitted''))',
                      'drained');
$$;
