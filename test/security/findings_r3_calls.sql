-- before: 7865b9f12d904515ba6c1712635e13f95bfab3c3 (pg_llm 0.2.0)
-- The third review's findings about calls: rate limits held by calls that
-- ended, budgets bypassed by streams cut short, by replies without usage
-- and by "n", numbers from a provider that overflow or cost nothing, keys
-- echoed back by a provider, provider text that floods or forges log
-- lines, waits a provider's header stretches for everyone, and the memory
-- a request takes.  One script that runs on pg_llm 0.2.0 and later (it
-- uses only what 0.2.0 had); each finding prints one line: its name,
-- "safe" or "UNSAFE", and what was seen.  test/security/before_after.sh
-- runs it against the commit above and the working tree.  The server must
-- preload pg_llm with a worker for this database; psql variables
-- openai_url and mock_port point at the mock provider, whose model
-- directives play the provider's part (usage=, echo_key=, retry_after=,
-- header_bytes=, ...: test/mock/README.md).
\ir setup.sql
SELECT 'http://127.0.0.1:' || :'mock_port' AS mock \gset
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
-- the text a query returns, or its error
CREATE FUNCTION val(query text) RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    v text;
BEGIN
    EXECUTE query INTO v;
    RETURN v;
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR: ' || SQLERRM;
END $$;
-- the first line of a text, at most 120 characters, for the table
CREATE FUNCTION short(t text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN t IS NULL THEN 'NULL'
                ELSE left(split_part(t, E'\n', 1), 120) || CASE WHEN length(t) > 120 OR t LIKE E'%\n%' THEN '...' ELSE '' END END $$;
CREATE FUNCTION wait_queue(seconds int) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    WHILE EXISTS (SELECT 1 FROM llm.queue WHERE status IN ('pending', 'running', 'submitted'))
          AND clock_timestamp() - t0 < make_interval(secs => seconds) LOOP
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
-- wait until a role has n usage rows (the writer runs every 200 ms)
CREATE FUNCTION wait_usage(who name, n int) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    WHILE (SELECT count(*) FROM llm.usage WHERE role_oid = (SELECT oid FROM pg_roles WHERE rolname = who)) < n
          AND clock_timestamp() - t0 < interval '10 s' LOOP
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
-- the usage rows of a role, one line: outcome cost (estimated)
CREATE FUNCTION usage_of(who name) RETURNS text LANGUAGE sql SET search_path = pg_catalog AS $$
    SELECT coalesce(string_agg(u.mode || ' ' || u.outcome || ' cost ' || coalesce(round(u.cost_usd, 8)::text, 'NULL')
                               || CASE WHEN (to_jsonb(u) ->> 'estimated')::boolean THEN ' (estimated)' ELSE '' END,
                               ', ' ORDER BY u.ts), 'no usage row')
    FROM llm.usage u WHERE u.role_oid = (SELECT oid FROM pg_roles WHERE rolname = who) $$;
-- the peak memory of a process so far, in kB
CREATE FUNCTION peak_kb(pid int) RETURNS bigint LANGUAGE sql AS $$
    SELECT (regexp_match(pg_read_file('/proc/' || pid || '/status'), 'VmHWM:\s+(\d+)'))[1]::bigint $$;
-- the queue worker's pid, once it runs (stats snapshots cleared while waiting)
CREATE FUNCTION worker_pid(other_than int DEFAULT 0) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    p int;
    t0 timestamptz := clock_timestamp();
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT a.pid INTO p FROM pg_stat_activity a
        WHERE a.backend_type = 'pg_llm worker' AND a.pid <> other_than;
        EXIT WHEN p IS NOT NULL OR clock_timestamp() - t0 > interval '30 s';
        PERFORM pg_sleep(0.2);
    END LOOP;
    RETURN p;
END $$;

-- roles with exactly the README's grants ("Privileges and keys")
CREATE FUNCTION grant_calls(who name) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE ROLE %I LOGIN', who);
    EXECUTE format('GRANT USAGE ON SCHEMA llm TO %I', who);
    EXECUTE format('GRANT EXECUTE ON FUNCTION llm.chat, llm.chat_completion, llm.chat_stream, llm.chat_many, llm.enqueue TO %I', who);
    EXECUTE format('GRANT SELECT ON llm.queue, llm.usage TO %I', who);
    EXECUTE format('GRANT SELECT ON llm.provider, llm.model TO %I', who);
END $$;
SELECT grant_calls(r) FROM unnest(ARRAY['mallory', 'alice', 'streamer', 'nouser', 'many_n',
                                        'absurd', 'numbers', 'memory']) r \g /dev/null
-- each limit its own endpoint (base_url): the state of one never helps another
CREATE FUNCTION limited(name text, options jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT llm.create_provider(name, 'openai', current_setting('my.mock') || '/' || name || '/v1',
                               api_key => 'sk-mock', options => options);
    SELECT llm.add_model(name, name, 'm');
    SELECT llm.add_model(name || '-fail', name, 'm?fail=400');
    SELECT llm.add_model(name || '-slow', name, 'm?latency=3000');
$$;
-- priced routes (a USD budget needs prices)
SELECT llm.add_model('priced', 'mock', 'm', input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SELECT llm.add_model('priced-slow', 'mock', 'm?chunk_delay=200', input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SELECT llm.add_model('priced-quiet', 'mock', 'm?chunk_delay=3000', input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SELECT llm.add_model('no-usage', 'mock', 'm?usage=none', input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SELECT llm.add_model('dear', 'mock', 'm', input_usd_per_mtok => 1, output_usd_per_mtok => 10) \g /dev/null

-- BAD 11 first, while the worker's peak memory is still its own: a
-- request size cap, and a request's memory at most about twice its size
SELECT llm.add_model('short-reply', 'mock', 'm?reply=ok') \g /dev/null
SET ROLE memory;
SELECT try($$SELECT llm.chat(repeat('word ', 20000000), 'short-reply')$$) AS r \gset
RESET ROLE;
SELECT 'a 100 MB prompt to llm.chat',
       CASE WHEN :'r' LIKE '%max_request_size%' THEN 'safe' ELSE 'UNSAFE' END,
       CASE WHEN :'r' = 'ok' THEN 'sent to the provider' ELSE 'refused: ' || short(:'r') END;
SET ROLE memory;
SELECT try($$SELECT llm.enqueue(repeat('word ', 20000000), 'short-reply')$$) AS r \gset
RESET ROLE;
SELECT 'a 100 MB prompt to llm.enqueue',
       CASE WHEN :'r' LIKE '%max_request_size%' THEN 'safe' ELSE 'UNSAFE' END,
       CASE WHEN :'r' = 'ok' THEN 'queued' ELSE 'refused: ' || short(:'r') END;
DELETE FROM llm.queue;
-- a 30 MB prompt (under any cap): the backend's peak, in a new session
\c
SET client_min_messages = error;
SELECT peak_kb(pg_backend_pid()) AS h0 \gset
SET ROLE memory;
SELECT try($$SELECT llm.chat(repeat('word ', 6000000), 'short-reply')$$) AS r \gset
RESET ROLE;
SELECT peak_kb(pg_backend_pid()) AS h1 \gset
SELECT 'backend memory for a 30 MB prompt',
       CASE WHEN (:h1 - :h0) / 30000.0 <= 2.5 AND :'r' = 'ok' THEN 'safe' ELSE 'UNSAFE' END,
       'peak grew by ' || round((:h1 - :h0) / 1024.0) || ' MB, ' || round((:h1 - :h0) / 30000.0, 1)
       || ' times the prompt (its repeat() included); the call: ' || short(:'r');
-- the same prompt queued: the worker's peak (a worker started afresh)
SELECT worker_pid() AS old \gset
SELECT pg_terminate_backend(:old) \g /dev/null
SELECT worker_pid(:old) AS w \gset
SELECT pg_sleep(1) \g /dev/null
SELECT peak_kb(:w) AS h0 \gset
SET ROLE memory;
SELECT llm.enqueue(repeat('word ', 6000000), 'short-reply') \g /dev/null
RESET ROLE;
SELECT wait_queue(60) \g /dev/null
SELECT peak_kb(:w) AS h1 \gset
SELECT 'worker memory for a queued 30 MB prompt',
       CASE WHEN (:h1 - :h0) / 30000.0 <= 2.5 AND q.status = 'done' THEN 'safe' ELSE 'UNSAFE' END,
       'peak grew by ' || round((:h1 - :h0) / 1024.0) || ' MB, ' || round((:h1 - :h0) / 30000.0, 1)
       || ' times the prompt; the item is ' || q.status || coalesce(': ' || short(q.error), '')
FROM llm.queue q;
DELETE FROM llm.queue;

SELECT set_config('my.mock', :'mock', false) \g /dev/null

-- WEAK: llm.max_response_size raised by a plain role
SET ROLE mallory;
SELECT try($$SET llm.max_response_size = '2000MB'$$) AS r \gset
RESET llm.max_response_size;
RESET ROLE;
SELECT 'llm.max_response_size = 2000MB by a plain role',
       CASE WHEN :'r' = 'ok' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN :'r' = 'ok' THEN 'accepted' ELSE 'refused: ' || short(:'r') END;

-- BAD 6: one call holds a provider's rate limit
SELECT limited('tpm1', '{"tpm_limit": 1000}') \g /dev/null
SET ROLE mallory;
SELECT try($$SELECT llm.chat('x', 'tpm1-fail', options => '{"max_tokens": 2147483647}')$$) \g /dev/null
SET ROLE alice;
SET llm.timeout = '5s';
SELECT try($$SELECT llm.chat('hi', 'tpm1', options => '{"max_tokens": 10}')$$) AS r \gset
RESET llm.timeout;
RESET ROLE;
SELECT 'tpm_limit after a failed call with max_tokens 2147483647',
       CASE WHEN :'r' = 'ok' THEN 'safe' ELSE 'UNSAFE' END,
       'the next call of another role: ' || short(:'r');

SELECT limited('tpm2', '{"tpm_limit": 1000}') \g /dev/null
SET ROLE mallory;
SET statement_timeout = '300ms';
SELECT llm.chat('x', 'tpm2-slow', options => '{"max_tokens": 2147483647}') \g /dev/null
RESET statement_timeout;
SET ROLE alice;
SET llm.timeout = '5s';
SELECT try($$SELECT llm.chat('hi', 'tpm2', options => '{"max_tokens": 10}')$$) AS r \gset
RESET llm.timeout;
RESET ROLE;
SELECT 'tpm_limit after a call cancelled in flight',
       CASE WHEN :'r' = 'ok' THEN 'safe' ELSE 'UNSAFE' END,
       'the next call of another role: ' || short(:'r');

SELECT limited('tpm3', '{"tpm_limit": 1000}') \g /dev/null
SET ROLE mallory;
SELECT count(*) FROM (SELECT llm.chat_stream('one two three four', 'tpm3', options => '{"max_tokens": 900}') LIMIT 1) s \g /dev/null
SET ROLE alice;
SET llm.timeout = '5s';
SELECT try($$SELECT llm.chat('hi', 'tpm3', options => '{"max_tokens": 500}')$$) AS r \gset
RESET llm.timeout;
RESET ROLE;
SELECT 'tpm_limit after a stream stopped by LIMIT',
       CASE WHEN :'r' = 'ok' THEN 'safe' ELSE 'UNSAFE' END,
       'the next call of another role: ' || short(:'r');

SELECT limited('rpm1', '{"rpm_limit": 60}') \g /dev/null
SET ROLE mallory;
SELECT llm.chat('x', 'rpm1') \g /dev/null
SET statement_timeout = '50ms';
\o /dev/null
SELECT format('SELECT llm.chat(%L, %L)', 'x', 'rpm1') FROM generate_series(1, 40) \gexec
\o
RESET statement_timeout;
SET ROLE alice;
SET llm.timeout = '5s';
SELECT try($$SELECT llm.chat('hi', 'rpm1')$$) AS r \gset
RESET llm.timeout;
RESET ROLE;
SELECT 'rpm_limit after 40 calls cancelled while they waited',
       CASE WHEN :'r' = 'ok' THEN 'safe' ELSE 'UNSAFE' END,
       'the next call of another role: ' || short(:'r');

SELECT limited('rpm2', '{"rpm_limit": 1}') \g /dev/null
SELECT llm.chat('x', 'rpm2') \g /dev/null
SELECT llm.clear_cooldown('rpm2') \g /dev/null
SET ROLE alice;
SET llm.timeout = '5s';
SELECT try($$SELECT llm.chat('hi', 'rpm2')$$) AS r \gset
RESET llm.timeout;
RESET ROLE;
SELECT 'llm.clear_cooldown gives back the turns taken',
       CASE WHEN :'r' = 'ok' THEN 'safe' ELSE 'UNSAFE' END,
       'a call after clear_cooldown: ' || short(:'r');

SELECT limited('rpm3', '{"rpm_limit": 1}') \g /dev/null
SELECT llm.chat('x', 'rpm3') \g /dev/null
SELECT llm.alter_provider('rpm3', options => '{"rpm_limit": 6000}') \g /dev/null
SET ROLE alice;
SET llm.timeout = '5s';
SELECT try($$SELECT llm.chat('hi', 'rpm3')$$) AS r \gset
RESET llm.timeout;
RESET ROLE;
SELECT 'rpm_limit raised from 1 to 6000 applies at once',
       CASE WHEN :'r' = 'ok' THEN 'safe' ELSE 'UNSAFE' END,
       'a call after the change: ' || short(:'r');

-- BAD 7: budgets bypassed by streams cut short and replies without usage
SELECT llm.set_budget('streamer', 1) \g /dev/null
SET ROLE streamer;
SELECT llm.chat_stream('one two three four five six seven eight', 'priced-slow') LIMIT 2 \g /dev/null
RESET ROLE;
SELECT wait_usage('streamer', 1) \g /dev/null
SELECT 'a stream stopped by LIMIT is paid for',
       CASE WHEN count(*) > 0 AND count(*) = count(u.cost_usd) AND min(u.cost_usd) > 0 THEN 'safe' ELSE 'UNSAFE' END,
       usage_of('streamer')
FROM llm.usage u WHERE u.role_oid = 'streamer'::regrole;
DELETE FROM llm.usage;

SET ROLE streamer;
SET statement_timeout = '700ms';
SELECT llm.chat_stream('one two three four five six seven eight', 'priced-slow') \g /dev/null
RESET statement_timeout;
RESET ROLE;
SELECT wait_usage('streamer', 1) \g /dev/null
SELECT 'a stream cancelled by statement_timeout is paid for',
       CASE WHEN count(*) > 0 AND count(*) = count(u.cost_usd) AND min(u.cost_usd) > 0 THEN 'safe' ELSE 'UNSAFE' END,
       usage_of('streamer')
FROM llm.usage u WHERE u.role_oid = 'streamer'::regrole;
DELETE FROM llm.usage;

SET ROLE streamer;
SET llm.stream_idle_timeout = '1s';
SELECT llm.chat_stream('one two three four', 'priced-quiet') \g /dev/null
RESET llm.stream_idle_timeout;
RESET ROLE;
SELECT wait_usage('streamer', 1) \g /dev/null
SELECT 'a stream that went quiet (idle timeout) is paid for',
       CASE WHEN count(*) > 0 AND count(*) = count(u.cost_usd) AND min(u.cost_usd) > 0 THEN 'safe' ELSE 'UNSAFE' END,
       usage_of('streamer')
FROM llm.usage u WHERE u.role_oid = 'streamer'::regrole;

SELECT llm.set_budget('nouser', 1) \g /dev/null
SET ROLE nouser;
SELECT llm.chat('a reply without usage', 'no-usage') \g /dev/null
SELECT llm.chat_stream('a stream without usage', 'no-usage') \g /dev/null
RESET ROLE;
SELECT wait_usage('nouser', 2) \g /dev/null
SELECT 'replies without usage are paid for',
       CASE WHEN count(*) = 2 AND count(u.cost_usd) = 2 AND min(u.cost_usd) > 0 THEN 'safe' ELSE 'UNSAFE' END,
       usage_of('nouser')
FROM llm.usage u WHERE u.role_oid = 'nouser'::regrole;

-- BAD 8: n multiplies the output a request may cost
SELECT llm.set_budget('many_n', 0.01) \g /dev/null
SET ROLE many_n;
SELECT try($$SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500, "n": 128}', 'dear')$$) AS r \gset
RESET ROLE;
SELECT 'max_tokens 500 with n 128 against a 0.01 USD budget',
       CASE WHEN :'r' LIKE '%budget%' THEN 'safe' ELSE 'UNSAFE' END,
       CASE WHEN :'r' = 'ok' THEN 'sent (it may cost 0.64 USD)' ELSE 'refused: ' || short(:'r') END;

-- BAD 9: one absurd usage number
SELECT llm.add_model('absurd', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A1e15%2C%22completion_tokens%22%3A5%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
BEGIN;
SET LOCAL ROLE absurd;
SELECT llm.chat('a', 'absurd') \g /dev/null
SET LOCAL ROLE alice;
SELECT llm.chat('b', 'priced') \g /dev/null
SET LOCAL ROLE absurd;
SELECT llm.chat('c', 'absurd') \g /dev/null
SET LOCAL ROLE alice;
SELECT llm.chat('d', 'priced') \g /dev/null
COMMIT;
SELECT wait_usage('alice', 2) \g /dev/null
SELECT wait_usage('absurd', 2) \g /dev/null
SELECT 'prompt_tokens 1e15: every usage row kept',
       CASE WHEN (SELECT count(*) FROM llm.usage WHERE role_oid = 'alice'::regrole AND model = 'priced') = 2
                 AND (SELECT count(cost_usd) FROM llm.usage WHERE role_oid = 'absurd'::regrole) = 2
            THEN 'safe' ELSE 'UNSAFE' END,
       'the other role''s rows: ' || (SELECT count(*) FROM llm.usage WHERE role_oid = 'alice'::regrole AND model = 'priced')
       || ' of 2; the absurd calls: ' || usage_of('absurd');

-- the same in the queue: the others' items are sent once and done
BEGIN;
SET LOCAL ROLE alice;
SELECT llm.enqueue('item ' || i, 'priced') FROM generate_series(1, 3) i \g /dev/null
SET LOCAL ROLE absurd;
SELECT llm.enqueue('absurd item', 'absurd') \g /dev/null
COMMIT;
SELECT wait_queue(30) \g /dev/null
SELECT 'prompt_tokens 1e15 in the queue: other items sent once',
       CASE WHEN count(*) FILTER (WHERE q.status = 'done' AND q.attempts = 1 AND q.enqueued_by = 'alice'::regrole) = 3
            THEN 'safe' ELSE 'UNSAFE' END,
       string_agg(q.prompt || ': ' || q.status || ' after ' || q.attempts || ' attempt(s)', ', ' ORDER BY q.id)
FROM llm.queue q;
DELETE FROM llm.queue;

-- WEAK: negative, fractional, 1e308 and duplicate-key usage numbers
SELECT llm.add_model('negative', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A-500000%2C%22completion_tokens%22%3A5%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SELECT llm.add_model('fraction', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A1.5%2C%22completion_tokens%22%3A2.5%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SELECT llm.add_model('huge', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A1e308%2C%22completion_tokens%22%3A1e308%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SELECT llm.add_model('twice', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A100000%2C%22completion_tokens%22%3A100000%2C%22prompt_tokens%22%3A0%2C%22completion_tokens%22%3A0%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2) \g /dev/null
SET ROLE numbers;
SELECT llm.chat('n', m) FROM unnest(ARRAY['negative', 'fraction', 'huge', 'twice']) m \g /dev/null
RESET ROLE;
SELECT wait_usage('numbers', 4) \g /dev/null
SELECT 'usage numbers negative, fractional, 1e308, given twice: ' || u.model,
       CASE WHEN u.cost_usd > 0 THEN 'safe' ELSE 'UNSAFE' END,
       'tokens ' || coalesce(u.input_tokens::text, 'NULL') || ' in, ' || coalesce(u.output_tokens::text, 'NULL')
       || ' out, cost ' || coalesce(round(u.cost_usd, 8)::text, 'NULL')
       || CASE WHEN (to_jsonb(u) ->> 'estimated')::boolean THEN ' (estimated)' ELSE '' END
FROM llm.usage u WHERE u.role_oid = 'numbers'::regrole ORDER BY u.ts;

-- BAD 10: a key echoed back by a provider
SELECT llm.add_model('echo-fields', 'mock', 'm?fail=400&echo_key=1&message=bad+request&error_code=KEY&error_type=KEY&error_param=KEY') \g /dev/null
SET ROLE mallory;
SELECT try($$SELECT llm.chat('x', 'echo-fields')$$) AS r \gset
RESET ROLE;
SELECT 'the key echoed in error code, type and param',
       CASE WHEN :'r' LIKE '%sk-mock%' THEN 'UNSAFE' ELSE 'safe' END,
       short(replace(:'r', E'\n', ' '));
SELECT llm.add_model('echo-event', 'mock', 'm?fault=error_event&echo_key=1&message=leak+KEY&error_code=KEY') \g /dev/null
SET ROLE mallory;
SELECT try($$SELECT llm.chat_stream('one two three four', 'echo-event')$$) AS r \gset
RESET ROLE;
SELECT 'the key echoed in a stream''s error event',
       CASE WHEN :'r' LIKE '%sk-mock%' THEN 'UNSAFE' ELSE 'safe' END,
       short(replace(:'r', E'\n', ' '));
SELECT llm.add_model('echo-cut', 'mock', 'm?fail=502&echo_key=1&body=' || repeat('x', 196) || 'KEY') \g /dev/null
SET ROLE mallory;
SELECT try($$SELECT llm.chat('x', 'echo-cut')$$) AS r \gset
RESET ROLE;
SELECT 'the key straddling the cut of a body that is not JSON',
       CASE WHEN :'r' LIKE '%sk-m%' THEN 'UNSAFE' ELSE 'safe' END,
       'the error ends: ' || right(split_part(:'r', E'\nHINT', 1), 60);
SELECT llm.create_provider('relay', 'openai', :'mock' || '/relay/v1', api_key => 'sk-mock',
                           options => '{"batch_api": "inline"}') \g /dev/null
SELECT llm.add_model('echo-batch', 'relay', 'm?fail=400&echo_key=1&message=rejected+KEY&error_code=KEY') \g /dev/null
SET ROLE mallory;
SELECT llm.enqueue('in a batch', 'echo-batch', via => 'batch_api') \g /dev/null
RESET ROLE;
SELECT wait_queue(30) \g /dev/null
SELECT 'the key echoed in a batch request''s error (llm.queue.error)',
       CASE WHEN q.error LIKE '%sk-mock%' THEN 'UNSAFE' ELSE 'safe' END,
       q.status || ': ' || short(q.error)
FROM llm.queue q WHERE q.prompt = 'in a batch';
DELETE FROM llm.queue;

-- WEAK: provider text of 5 MB, and a raw newline that forges a line
SELECT llm.add_model('five-mb', 'mock', 'm?fail=400&message_bytes=5000000') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'five-mb')$$) AS r \gset
SELECT 'a 5 MB error message from the provider',
       CASE WHEN length(:'r') > 10000 THEN 'UNSAFE' ELSE 'safe' END,
       'the error shown is ' || length(:'r') || ' characters';
SELECT llm.add_model('newline', 'mock', 'm?fail=400&message=fine%0AERROR:++forged+line') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'newline')$$) AS r \gset
SELECT 'a raw newline in the provider''s text',
       CASE WHEN :'r' ~ E'\nERROR:  forged' THEN 'UNSAFE' ELSE 'safe' END,
       'the detail: ' || short(split_part(:'r', E'\nDETAIL: ', 2));

-- WEAK: a \u0000 in a reply, on every path
SELECT llm.add_model('nul', 'mock', 'm?reply=before%00after') \g /dev/null
SELECT val($$SELECT llm.chat('x', 'nul')$$) AS c1 \gset
SELECT val($$SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}]}', 'nul') #>> '{choices,0,message,content}'$$) AS c2 \gset
SELECT val($$SELECT string_agg(s, '') FROM (SELECT llm.chat_stream('x', 'nul') s) x$$) AS c3 \gset
SELECT llm.enqueue('nul', 'nul') \g /dev/null
SELECT wait_queue(20) \g /dev/null
SELECT coalesce((SELECT coalesce(reply, 'error: ' || error) FROM llm.queue WHERE prompt = 'nul'), 'no item') AS c4 \gset
SELECT 'a reply with \u0000 (chat, chat_completion, chat_stream, queue)',
       CASE WHEN :'c1' = :'c2' AND :'c2' = :'c3' AND :'c3' = :'c4' AND :'c1' LIKE 'before%after' THEN 'safe' ELSE 'UNSAFE' END,
       'chat: ' || short(quote_literal(:'c1')) || ', chat_completion: ' || short(quote_literal(:'c2'))
       || ', stream: ' || short(quote_literal(:'c3')) || ', queue: ' || short(quote_literal(:'c4'));
DELETE FROM llm.queue;

-- WEAK: Retry-After 9000000000000, inf and 1e300; a reset header of 1e300 s
CREATE FUNCTION cooldown_seen(p text, OUT verdict text, OUT seen text) LANGUAGE plpgsql AS $$
BEGIN
    SELECT CASE WHEN s.cooldown_until IS NULL OR s.cooldown_until < now() + interval '1 day' THEN 'safe' ELSE 'UNSAFE' END,
           'cooldown until ' || coalesce(s.cooldown_until::text, 'none') || coalesce(' (' || s.cooldown_reason || ')', '')
    INTO verdict, seen
    FROM llm.provider_status s WHERE s.provider = p;
EXCEPTION WHEN OTHERS THEN
    verdict := 'UNSAFE';
    seen := 'llm.provider_status fails: ' || SQLERRM;
END $$;
SELECT limited('ra1', '{}') \g /dev/null
SELECT llm.add_model('ra1-long', 'ra1', 'm?fail=429&retry_after=9000000000000') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'ra1-long')$$) \g /dev/null
SELECT 'Retry-After: 9000000000000', c.verdict, c.seen FROM cooldown_seen('ra1') c;
SELECT limited('ra2', '{}') \g /dev/null
SELECT llm.add_model('ra2-inf', 'ra2', 'm?fail=429&retry_after=inf') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'ra2-inf')$$) AS r \gset
SELECT 'Retry-After: inf', c.verdict, c.seen || '; the call: ' || short(:'r') FROM cooldown_seen('ra2') c;
SELECT limited('ra3', '{}') \g /dev/null
SELECT llm.add_model('ra3-e300', 'ra3', 'm?fail=503&retry_after_ms=1e300') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'ra3-e300')$$) AS r \gset
SELECT 'retry-after-ms: 1e300', c.verdict, c.seen || '; the call: ' || short(:'r') FROM cooldown_seen('ra3') c;
SELECT limited('ra4', '{}') \g /dev/null
SELECT llm.add_model('ra4-reset', 'ra4', 'm?header=x-ratelimit-remaining-requests:0&header=x-ratelimit-reset-requests:1e300s') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'ra4-reset')$$) \g /dev/null
SELECT 'x-ratelimit-reset-requests: 1e300s with nothing remaining', c.verdict, c.seen FROM cooldown_seen('ra4') c;

-- a queue item answered 429 with Retry-After: inf is sent again at once
-- (an undefined conversion made the wait negative), until it passes
SELECT limited('ra5', '{}') \g /dev/null
SELECT llm.add_model('ra5-inf', 'ra5', 'm?fail=429&retry_after=inf&times=20') \g /dev/null
-- (a prompt of its own: the mock counts times=20 per prompt, and the
-- earlier version's run used the same mock)
SELECT llm.enqueue('again and again ' || md5(random()::text), 'ra5-inf') \g /dev/null
SELECT pg_sleep(3) \g /dev/null
SELECT 'a queue item answered 429 with Retry-After: inf',
       CASE WHEN q.status = 'done' THEN 'UNSAFE' ELSE 'safe' END,
       CASE WHEN q.status = 'done' THEN 'sent 21 times within 3 s, the 429s of the provider ignored'
            ELSE 'still waiting its turn after 3 s (' || q.status || ')' END
FROM llm.queue q WHERE q.prompt LIKE 'again and again %';
DELETE FROM llm.queue;

-- WEAK: unclear errors
SELECT llm.add_model('big-header', 'mock', 'm?header_bytes=200000') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'big-header')$$) AS r \gset
SELECT 'a 200 kB response header',
       CASE WHEN :'r' ILIKE '%out of memory%' THEN 'UNSAFE' ELSE 'safe' END,
       short(replace(:'r', E'\n', ' '));
SELECT llm.add_model('http999', 'mock', 'm?fail=999') \g /dev/null
SELECT try($$SELECT llm.chat('x', 'http999')$$) AS r \gset
SELECT 'HTTP 999',
       CASE WHEN :'r' LIKE '%rate-limiting or overloaded%' THEN 'UNSAFE' ELSE 'safe' END,
       'the hint: ' || short(split_part(:'r', E'\nHINT: ', 2));
