-- Limits a caller or a provider cannot stretch: rate-limit turns given
-- back whatever way a call ends, a provider's numbers and waits held to
-- what they can be, usage that is paid for when a stream is cut short or
-- a reply has no usage, n against a budget, provider text redacted and
-- bounded, NUL characters, and the size of a request or a response.
-- the mock reads its directives from the model name (mock?fail=500)
SET llm.pass_through = on;
\set VERBOSITY default
\set ON_ERROR_STOP 0
SELECT replace(base_url, '/v1', '') AS mock FROM llm.provider WHERE name = 'mock' \gset
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;
-- every limit its own endpoint (the state of one never helps another)
CREATE FUNCTION limited(name text, options jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT llm.create_provider(name, 'openai', current_setting('my.mock') || '/' || name || '/v1',
                               api_key => 'sk-mock', options => options);
    SELECT llm.add_model(name, name, 'm');
$$;
SELECT set_config('my.mock', :'mock', false) IS NOT NULL AS set;
-- the usage rows written so far, without what changes from run to run
CREATE FUNCTION usage_rows() RETURNS TABLE (model text, outcome text, http_status smallint,
                                            input_tokens int, output_tokens int, cost_usd numeric,
                                            estimated boolean)
LANGUAGE sql AS $$
    SELECT u.model, u.outcome, u.http_status, u.input_tokens, u.output_tokens,
           round(u.cost_usd, 8), u.estimated
    FROM llm.usage u ORDER BY u.ts, u.model $$;
CREATE FUNCTION wait_usage(n int) RETURNS text LANGUAGE sql AS $$
    SELECT wait_until(format('SELECT count(*) >= %s FROM llm.usage', n), n || ' usage rows') $$;
-- a statement's outcome: ok, or its error with the waits it names as N s
CREATE FUNCTION outcome(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN regexp_replace(SQLERRM, '[0-9.]+ s\M', 'N s', 'g');
END $$;

-- rate limits: a failed call with a huge max_tokens gives its tokens back
SELECT limited('tpm', '{"tpm_limit": 1000}');
SET llm.timeout = '5s';
SELECT llm.chat('x', 'tpm', options => '{"max_tokens": 2147483647}') IS NULL AS sent;
SELECT llm.add_model('tpm-fail', 'tpm', 'm?fail=400');
SELECT llm.chat('x', 'tpm-fail', options => '{"max_tokens": 2147483647}');
SELECT llm.chat('x', 'tpm', options => '{"max_tokens": 10}');
-- one call counts for at most one minute of the limit: a second one waits
-- about a minute behind a huge one still in flight, not 128849018 s
SELECT provider, tpm_limit, tokens_last_minute <= 1000 AS at_most_a_minute
FROM llm.provider_status WHERE provider = 'tpm';
-- clear_cooldown gives every turn back; a raised limit applies at once
SELECT limited('rpm', '{"rpm_limit": 1}');
SELECT llm.chat('x', 'rpm');
SELECT outcome($$SELECT llm.chat('x', 'rpm')$$);
SELECT llm.clear_cooldown('rpm');
SELECT llm.chat('x', 'rpm');
SELECT outcome($$SELECT llm.chat('x', 'rpm')$$);
SELECT llm.alter_provider('rpm', options => '{"rpm_limit": 6000}');
SELECT llm.chat('x', 'rpm');
-- calls cancelled while they waited for their turn give it back
SELECT llm.alter_provider('rpm', options => '{"rpm_limit": 60}');
SELECT llm.clear_cooldown('rpm');
SELECT llm.chat('x', 'rpm') IS NOT NULL AS sent;
SELECT llm.chat('x', 'rpm') IS NOT NULL AS sent;
SET statement_timeout = '50ms';
SELECT llm.chat('x', 'rpm');
SELECT llm.chat('x', 'rpm');
SELECT llm.chat('x', 'rpm');
SELECT llm.chat('x', 'rpm');
SELECT llm.chat('x', 'rpm');
RESET statement_timeout;
SELECT llm.chat('after five cancelled', 'rpm');
RESET llm.timeout;

-- a provider's waits are held to llm.max_cooldown (600 s): Retry-After of
-- 9000000000000, retry-after-ms of 1e300, a reset header of 1e300 s;
-- "inf" is no number at all (a 429 without a wait)
SELECT limited('ra', '{}');
SELECT llm.add_model('ra-long', 'ra', 'm?fail=429&retry_after=9000000000000');
SELECT llm.add_model('ra-e300', 'ra', 'm?fail=503&retry_after_ms=1e300&should_retry=false');
SELECT llm.add_model('ra-reset', 'ra', 'm?header=x-ratelimit-remaining-requests:0&header=x-ratelimit-reset-requests:1e300s');
SELECT llm.add_model('ra-inf', 'ra', 'm?fail=429&retry_after=inf&should_retry=false');
SELECT llm.chat('x', 'ra-long');
SELECT cooldown_reason, cooldown_until <= now() + interval '600 s' AS held
FROM llm.provider_status WHERE provider = 'ra';
SELECT llm.clear_cooldown('ra');
SELECT llm.chat('x', 'ra-e300');
SELECT cooldown_reason, cooldown_until <= now() + interval '600 s' AS held
FROM llm.provider_status WHERE provider = 'ra';
SELECT llm.clear_cooldown('ra');
SELECT llm.chat('x', 'ra-reset');
SELECT cooldown_reason, cooldown_until <= now() + interval '600 s' AS held
FROM llm.provider_status WHERE provider = 'ra';
SELECT llm.clear_cooldown('ra');
SELECT llm.chat('x', 'ra-inf');
SELECT cooldown_reason FROM llm.provider_status WHERE provider = 'ra';
SELECT llm.drop_provider(p) FROM unnest(ARRAY['tpm', 'rpm', 'ra']) p;

SELECT wait_usage(20);
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;

-- usage: a provider's numbers are billed by only when they can be token
-- counts; otherwise the row is kept, counted from the text, estimated
SELECT llm.add_model('lim-priced', 'mock', 'mock-priced', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('absurd', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A1e15%2C%22completion_tokens%22%3A5%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('negative', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A-500000%2C%22completion_tokens%22%3A5%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('fraction', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A1.5%2C%22completion_tokens%22%3A2%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('twice', 'mock', 'm?usage=%7B%22prompt_tokens%22%3A1000%2C%22prompt_tokens%22%3A0%2C%22completion_tokens%22%3A0%7D',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('no-usage', 'mock', 'm?usage=none', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('slow', 'mock', 'm?chunk_delay=300', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.chat('one two three', m) FROM unnest(ARRAY['lim-priced', 'absurd', 'negative', 'fraction', 'twice', 'no-usage']) m;
-- a stream stopped by LIMIT before the provider's count, one without usage
SELECT llm.chat_stream('one two three four five six seven eight', 'slow') LIMIT 2;
SELECT string_agg(s, '') FROM llm.chat_stream('one two three', 'no-usage') s;
SELECT wait_usage(8);
SELECT * FROM usage_rows();
-- a number too large for the old numeric(14, 8) column is stored
SELECT llm.add_model('dear', 'mock', 'm', input_usd_per_mtok => 1000000000000, output_usd_per_mtok => 1000000000000);
SELECT llm.chat('one two three', 'dear');
SELECT wait_usage(9);
SELECT model, cost_usd FROM llm.usage WHERE model = 'dear';
-- the output counted from the text is the one estimate's (tokens.c), not
-- a quarter of its bytes: 40 one-letter words are 40 tokens, not 20
SELECT llm.add_model('no-usage-words', 'mock', 'm?usage=none&reply=' || repeat('a%20', 39) || 'a',
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT length(llm.chat('x', 'no-usage-words')) AS bytes;
SELECT count(*) AS rows FROM llm.chat_stream('x', 'no-usage-words');
SELECT wait_until($$SELECT count(*) = 2 FROM llm.usage WHERE model = 'no-usage-words'$$, 'recorded');
SELECT mode, output_tokens, estimated FROM llm.usage WHERE model = 'no-usage-words' ORDER BY mode;
-- a queue item with absurd numbers does not fail the others' items
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;
SELECT llm.enqueue('item ' || i, 'lim-priced') IS NOT NULL AS queued FROM generate_series(1, 3) i;
SELECT llm.enqueue('absurd item', 'absurd') IS NOT NULL AS queued;
SELECT wait_queue();
SELECT prompt, status, attempts, error FROM llm.queue
WHERE prompt LIKE 'item %' OR prompt = 'absurd item' ORDER BY id;
SELECT wait_usage(4);
SELECT model, outcome, estimated, cost_usd > 0 AS paid FROM llm.usage ORDER BY model;
DELETE FROM llm.queue WHERE prompt LIKE 'item %' OR prompt = 'absurd item';

-- a budget: the reservation is the most a request may cost, n included
CREATE ROLE regress_llm_limits_n;
GRANT USAGE ON SCHEMA llm TO regress_llm_limits_n;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb), llm.chat_completion(jsonb, text) TO regress_llm_limits_n;
SELECT llm.add_model('dearer', 'mock', 'm', input_usd_per_mtok => 1, output_usd_per_mtok => 10);
SELECT llm.set_budget('regress_llm_limits_n', 0.01);
SET ROLE regress_llm_limits_n;
SELECT llm.chat('hi', 'dearer', options => '{"max_tokens": 500}');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500, "n": 128}', 'dearer');
RESET ROLE;
SELECT llm.set_budget('regress_llm_limits_n', NULL, NULL);

-- provider text: the key redacted in every field (message, code, type,
-- param), in a stream's error event and before a body is cut; at most
-- 2000 bytes of it; control characters escaped
SELECT llm.chat('x', 'mock?fail=400&echo_key=1&message=bad+KEY&error_code=KEY&error_type=KEY&error_param=KEY');
SELECT llm.chat_stream('one two three four', 'mock?fault=error_event&echo_key=1&message=leak+KEY&error_code=KEY');
SELECT llm.chat('x', 'mock?fail=502&should_retry=false&echo_key=1&body=' || repeat('x', 196) || 'KEY');
SELECT llm.chat('x', 'mock?fail=400&message=fine%0AERROR:++forged%0D%09tab%01');
\set VERBOSITY terse
SELECT llm.chat('x', 'mock?fail=400&message_bytes=5000000');
\set VERBOSITY default
DO $$
DECLARE
    d text;
BEGIN
    PERFORM llm.chat('x', 'mock?fail=400&message_bytes=5000000');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'detail of % characters, ending with "%"', length(d), right(d, 30);
END $$;

-- a NUL (\u0000) in a reply becomes U+FFFD on every path
SELECT llm.chat('x', 'mock?reply=before%00after') = E'before\uFFFDafter' AS chat;
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}]}', 'mock?reply=before%00after')
       #>> '{choices,0,message,content}' = E'before\uFFFDafter' AS chat_completion;
SELECT string_agg(s, '') = E'before\uFFFDafter' AS stream FROM llm.chat_stream('x', 'mock?reply=before%00after') s;
SELECT llm.enqueue('nul', 'mock?reply=before%00after') IS NOT NULL AS queued;
SELECT wait_queue();
SELECT reply = E'before\uFFFDafter' AS queue, error FROM llm.queue WHERE prompt = 'nul';
DELETE FROM llm.queue WHERE prompt = 'nul';

-- sizes: a request larger than llm.max_request_size is refused before
-- anything is sent or queued; a plain role cannot change it, nor raise
-- llm.max_response_size
SET llm.max_request_size = '1MB';
SELECT llm.chat(repeat('x', 2000000), 'mock');
SELECT llm.chat('x', 'mock', system => repeat('x', 2000000));
SELECT llm.chat_completion(jsonb_build_object('messages', jsonb_build_array(
           jsonb_build_object('role', 'user', 'content', repeat('x', 2000000)))), 'mock');
SELECT * FROM llm.chat_many(ARRAY['short', repeat('x', 2000000)], 'mock');
SELECT count(*) FROM llm.chat_stream(repeat('x', 2000000), 'mock');
SELECT llm.enqueue(repeat('x', 2000000), 'mock');
-- quotes and control characters take more room as JSON: the body counts
SELECT llm.chat(repeat(E'\x01', 200000), 'mock');
-- a long prompt under the cap is sent exactly
SELECT llm.chat(repeat('ab"\', 100000), 'mock') = 'echo: ' || repeat('ab"\', 100000) AS same;
RESET llm.max_request_size;
CREATE ROLE regress_llm_limits_plain;
SET ROLE regress_llm_limits_plain;
SET llm.max_request_size = '1GB';
SET llm.max_response_size = '1GB';
SET llm.max_response_size = '1MB';
SHOW llm.max_response_size;
RESET llm.max_response_size;
RESET ROLE;
SET llm.max_response_size = '1GB';
RESET llm.max_response_size;
DROP ROLE regress_llm_limits_plain;

-- clear errors: a 200 kB response header, a status HTTP does not define
SELECT llm.chat('x', 'mock?header_bytes=200000');
SELECT llm.chat('x', 'mock?fail=999');

DROP FUNCTION limited(text, jsonb);
DROP FUNCTION usage_rows();
DROP FUNCTION wait_usage(int);
DROP FUNCTION outcome(text);
SELECT llm.drop_model(m) FROM unnest(ARRAY['lim-priced', 'absurd', 'negative', 'fraction', 'twice', 'no-usage',
                                           'slow', 'dear', 'dearer']) m;
DROP OWNED BY regress_llm_limits_n;
DROP ROLE regress_llm_limits_n;
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;
