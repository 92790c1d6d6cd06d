-- Traffic control: limits checked at create/alter time, llm.provider_status,
-- and a cooldown that a 429 with Retry-After starts for every caller.
\set VERBOSITY terse
SELECT llm.create_provider('limited', 'openai', 'http://127.0.0.1:1/v1', options => '{"rpm_limit": -1}');
SELECT llm.create_provider('limited', 'openai', 'http://127.0.0.1:1/v1', options => '{"rpm_limit": 1.5}');
SELECT llm.create_provider('limited', 'openai', 'http://127.0.0.1:1/v1', options => '{"tpm_limit": 0}');
SELECT llm.create_provider('limited', 'openai', 'http://127.0.0.1:1/v1', options => '{"rpm_limit": "60"}');
SELECT llm.alter_provider('no-such-provider', options => '{"rpm_limit": 60}');
\set VERBOSITY default
-- (limits and cooldowns belong to an endpoint: its base_url and key; the
-- mock answers under any path prefix)
SELECT replace(base_url, '/v1', '/paced/v1') AS paced_url FROM llm.provider WHERE name = 'mock' \gset
SELECT llm.create_provider('paced', 'openai', :'paced_url', api_key => 'sk-mock',
                           options => '{"rpm_limit": 120, "max_retries": 0}');
SELECT llm.add_model('paced', 'paced', 'mock');
-- 120 a minute is two a second, with a burst of one second's worth above
-- that: the first three go at once, the next ones every half second
SELECT clock_timestamp() AS t0 \gset
SELECT count(llm.chat('paced ' || g, 'paced')) FROM generate_series(1, 5) g;
SELECT extract(epoch FROM clock_timestamp() - :'t0') BETWEEN 0.9 AND 4 AS waited_for_turns;
SELECT provider, rpm_limit, requests_last_minute, tpm_limit, cooldown_until IS NULL AS no_cooldown, waiting
FROM llm.provider_status WHERE provider = 'paced';
-- a call that would wait longer than its timeout fails, naming the limit
-- (the wait it names depends on the moment: shown as N)
CREATE FUNCTION show_wait_error(query text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    hint text;
BEGIN
    EXECUTE query;
    RAISE NOTICE 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RAISE NOTICE '% (%)', regexp_replace(msg, 'wait [0-9.]+ s', 'wait N s'), hint;
END;
$$;
SET llm.timeout = '100ms';
SELECT show_wait_error($$SELECT count(llm.chat('paced again ' || g, 'paced')) FROM generate_series(1, 3) g$$);
RESET llm.timeout;
-- a 429 with Retry-After: the provider cools down for every caller; a
-- model with a fallback route goes there at once
SELECT llm.add_model('cooled', 'paced', 'mock?fail=429&retry_after=30&when=trigger', priority => 1);
SELECT llm.add_model('cooled', 'relay', 'relay-model', priority => 2);
SELECT llm.chat('trigger the 429', 'cooled');
SELECT provider, cooldown_until > now() + interval '20 seconds' AS cooling, cooldown_reason,
       rate_limited_last_minute
FROM llm.provider_status WHERE provider = 'paced';
-- another call of the model skips the cooling provider at once
SELECT clock_timestamp() AS t1 \gset
SELECT llm.chat('a calm question', 'cooled');
SELECT extract(epoch FROM clock_timestamp() - :'t1') < 1 AS at_once;
-- a model without a fallback waits for the cooldown, within its timeout
SET llm.timeout = '500ms';
SELECT show_wait_error($$SELECT llm.chat('no way around', 'paced')$$);
RESET llm.timeout;
SELECT llm.drop_model('cooled');
SELECT llm.drop_model('paced');
SELECT llm.drop_provider('paced');
