-- Every way a call or a stream can end early, for test/memcheck.sh: each
-- path that must free malloc'd curl transfers, SSE buffers and json-c
-- objects runs here, several times over in loops so that a leak on one
-- path shows up as a multiple.  Self-contained: it makes its own providers
-- in its own database.  Outputs are independent of timing, so the file
-- passes at valgrind's speed as well as natively.
\getenv mock_port MOCK_PORT
\set openai_url 'http://127.0.0.1:' :mock_port '/v1'
\set anthropic_url 'http://127.0.0.1:' :mock_port '/anthropic/v1'
\setenv MEMCHECK_DB :DBNAME
SET client_min_messages = warning;
CREATE EXTENSION pg_llm;
RESET client_min_messages;
SELECT llm.create_provider('mock', 'openai', :'openai_url', api_key => 'sk-mock', options => '{"pass_through": true}') IS NULL AS created;
SELECT llm.create_provider('claude', 'anthropic', :'anthropic_url', api_key => 'sk-mock') IS NULL AS created;
SELECT llm.add_model('c-truncate', 'claude', 'claude?fault=truncate') IS NULL AS added;
SELECT llm.add_model('c-error', 'claude', 'claude?fault=error_event') IS NULL AS added;
SELECT llm.add_model('c-drip', 'claude', 'claude?chunk_delay=100') IS NULL AS added;
SELECT llm.add_model('c-529', 'claude', 'claude?fail=529') IS NULL AS added;
SELECT llm.add_model('c-400', 'claude', 'claude?fail=400') IS NULL AS added;
SELECT llm.add_model('c-malformed', 'claude', 'claude?fault=malformed') IS NULL AS added;
SELECT llm.add_model('c-null', 'claude', 'claude?fault=null_content') IS NULL AS added;
SELECT llm.use_provider('mock') IS NULL AS switched;
\set VERBOSITY terse

-- LIMIT: the expression context's shutdown callback ends each stream
SELECT llm.chat_stream('one two three four five', 'mock?chunk_delay=20') LIMIT 2;
SELECT llm.chat_stream('one two three four five', 'c-drip') LIMIT 2;
SELECT count(*) FROM generate_series(1, 5) g,
  LATERAL (SELECT llm.chat_stream('a b c d ' || g, 'mock') LIMIT 1) s;
SELECT count(*) FROM generate_series(1, 3) g,
  LATERAL (SELECT llm.chat_stream('a b c d ' || g, 'claude') LIMIT 2) s;
-- a cursor closed after two rows, and one left open at rollback and commit
BEGIN;
DECLARE c CURSOR FOR SELECT llm.chat_stream('one two three four five', 'mock');
FETCH 2 FROM c;
CLOSE c;
DECLARE d CURSOR FOR SELECT llm.chat_stream('one two three four five', 'claude');
FETCH 1 FROM d;
ROLLBACK;
BEGIN;
DECLARE e CURSOR FOR SELECT llm.chat_stream('one two three four five', 'mock?chunk_delay=20');
FETCH 1 FROM e;
COMMIT;

-- errors after some rows, at top level (the transaction abort frees)
SELECT llm.chat_stream('one two three four five six', 'mock?fault=truncate');
SELECT llm.chat_stream('one two three four five six', 'mock?fault=error_event');
SELECT llm.chat_stream('one two three four five six', 'c-truncate');
SELECT llm.chat_stream('one two three four five six', 'c-error');
SELECT llm.chat_stream('x', 'mock?fault=malformed');
SET llm.max_response_size = '64kB';
SELECT count(*) FROM (SELECT llm.chat_stream('x', 'mock?fault=big&bytes=200000')) s;
RESET llm.max_response_size;
-- errors before the first row
SELECT llm.chat_stream('x', 'mock?fail=401');
-- (a refused key stops the provider's calls until it changes: set it free)
SELECT FROM llm.clear_cooldown('mock');
SELECT llm.chat_stream('x', 'mock?fault=html');
SELECT llm.chat_stream('x', 'mock', options => '{"temperature": 5}');
SELECT llm.chat_stream('x', 'mock', options => '{"stream": true}');
-- the same errors caught in subtransactions: no transaction callback
-- runs, so the memory context callbacks alone must free everything
SET llm.max_retries = 0;
SET llm.max_response_size = '64kB';
DO $$
DECLARE
  m text;
  n int := 0;
BEGIN
  FOREACH m IN ARRAY ARRAY['mock?fault=truncate', 'mock?fault=error_event',
                           'c-truncate', 'c-error', 'mock?fault=malformed',
                           'mock?fail=401', 'mock?fault=reset', 'c-400',
                           'mock?fault=big&bytes=200000'] LOOP
    FOR i IN 1..3 LOOP
      BEGIN
        PERFORM llm.chat_stream('one two three four five six', m);
      EXCEPTION WHEN OTHERS THEN
        n := n + 1;
        PERFORM llm.clear_cooldown('mock');
      END;
    END LOOP;
  END LOOP;
  RAISE NOTICE 'stream errors caught: %', n;
END $$;
RESET llm.max_retries;
RESET llm.max_response_size;

-- timeouts: statement_timeout in the middle of a stream, a stream that
-- goes quiet, and statement_timeout caught in a subtransaction
SET statement_timeout = '300ms';
SELECT llm.chat_stream('one two three four five six seven eight nine ten', 'mock?chunk_delay=100');
SELECT llm.chat_stream('one two three four five six seven eight nine ten', 'c-drip');
RESET statement_timeout;
SET llm.stream_idle_timeout = 1;
SET llm.max_retries = 0;
SELECT count(*) FROM llm.chat_stream('x', 'mock?fault=hang');
RESET llm.stream_idle_timeout;
RESET llm.max_retries;
-- (statement_timeout is armed once per top-level statement, hence one
-- caught cancel per DO)
SET statement_timeout = '300ms';
DO $$
BEGIN
  PERFORM llm.chat_stream('one two three four five six seven eight', 'mock?chunk_delay=200');
EXCEPTION WHEN query_canceled THEN
  RAISE NOTICE 'stream cancel caught';
END $$;
DO $$
BEGIN
  PERFORM llm.chat_stream('one two three four five six seven eight', 'c-drip');
EXCEPTION WHEN query_canceled THEN
  RAISE NOTICE 'stream cancel caught';
END $$;
RESET statement_timeout;

-- llm.chat's faults, each raised at top level once and caught in a loop
SET llm.max_retries = 1;
SELECT llm.chat('x', 'mock?fail=500');
SELECT llm.chat('x', 'mock?fail=429&retry_after=0.05');
SELECT llm.chat('x', 'mock?fail=429&quota=1');
-- out of quota sets the provider aside for its quota_cooldown: back now
SELECT llm.clear_cooldown('mock');
SELECT llm.chat('x', 'mock?fail=404');
SELECT llm.chat('x', 'mock?fault=malformed');
SELECT llm.chat('x', 'mock?fault=notjson');
SELECT llm.chat('x', 'mock?fault=html');
SELECT llm.chat('x', 'mock?fault=empty_choices');
SELECT llm.chat('x', 'mock?fault=null_content');
SELECT llm.chat('x', 'mock?fault=reset');
SELECT llm.chat('x', 'c-529');
SELECT llm.chat('x', 'c-malformed');
SELECT llm.chat('x', 'c-null');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}]}', 'mock?fault=malformed');
SELECT llm.chat_completion('{"messages": []}', 'mock');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', 'mock');
SELECT llm.chat('x', 'mock', options => '[1, 2]');
SELECT llm.chat('x', 'mock', options => '{"messages": []}');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}]}', 'c-malformed');
SET llm.max_response_size = '64kB';
SELECT llm.chat('x', 'mock?fault=big&bytes=200000');
RESET llm.max_response_size;
SET llm.max_retries = 0;
SET llm.timeout = '300ms';
SELECT llm.chat('x', 'mock?fault=hang');
RESET llm.timeout;
SELECT llm.create_provider('nowhere', 'openai', 'http://127.0.0.1:9/v1') IS NULL AS created;
SELECT llm.add_model('nowhere', 'nowhere', 'm') IS NULL AS added;
SELECT llm.chat('x', 'nowhere');
SET statement_timeout = '300ms';
SELECT llm.chat('x', 'mock?fault=hang');
RESET statement_timeout;
-- (llm.max_retries is still 0: no backoff sleeps in the loops)
DO $$
DECLARE
  m text;
  n int := 0;
BEGIN
  FOREACH m IN ARRAY ARRAY['mock?fail=500', 'mock?fail=401', 'mock?fault=malformed',
                           'mock?fault=notjson', 'mock?fault=html',
                           'mock?fault=empty_choices', 'mock?fault=null_content',
                           'mock?fault=reset', 'mock?fault=truncate',
                           'c-400', 'c-malformed', 'c-null', 'nowhere'] LOOP
    FOR i IN 1..3 LOOP
      BEGIN
        PERFORM llm.chat('x', m);
      EXCEPTION WHEN OTHERS THEN
        n := n + 1;
        PERFORM llm.clear_cooldown('mock');
      END;
    END LOOP;
  END LOOP;
  RAISE NOTICE 'chat errors caught: %', n;
END $$;
SET statement_timeout = '300ms';
DO $$
BEGIN
  PERFORM llm.chat('x', 'mock?fault=hang');
EXCEPTION WHEN query_canceled THEN
  RAISE NOTICE 'chat cancel caught';
END $$;
RESET statement_timeout;
RESET llm.max_retries;

-- a client that goes away in the middle of a stream: its backend ends
-- (output and timing do not matter; its valgrind log is checked)
\! timeout -s KILL 8 psql -X -q -d "$MEMCHECK_DB" -c "SELECT llm.chat_stream('a b c d e f g h i j k l m n o p q r s t', 'mock?chunk_delay=500')" >/dev/null 2>&1; true

-- a stream that ends while its query goes on, in the select list and in
-- FROM: the stream's memory goes at its last row, but the query's
-- expression contexts live on until the query ends.  The 120
-- set-returning functions that end after it fill PostgreSQL's list of
-- free memory contexts, so the stream's memory is really given back to
-- malloc, where valgrind sees any later use of it.
DO $$
DECLARE
  srfs text := (SELECT string_agg('generate_series(1, 3)', ', ') FROM generate_series(1, 120));
  n bigint;
BEGIN
  EXECUTE format('SELECT count(*) FROM (SELECT llm.chat_stream(%L, %L), %s) s', 'x', 'mock', srfs)
    INTO n;
  RAISE NOTICE 'rows: %', n;
  EXECUTE format('SELECT count(*) FROM (SELECT string_agg(c, '''') FROM llm.chat_stream(%L, %L) c) s, '
                 '(SELECT count(*) FROM (SELECT %s) q) t', 'x', 'claude', srfs)
    INTO n;
  RAISE NOTICE 'rows: %', n;
END $$;

-- the backend is healthy afterwards
SELECT string_agg(c, '') FROM llm.chat_stream('still fine', 'mock') c;
SELECT llm.chat('still alive', 'claude');
