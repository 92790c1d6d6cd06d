-- llm.estimate and llm.estimate_job: what prompts would use and cost, on
-- each route of a model, before anything is sent; exact counts from a
-- provider that counts (Anthropic's count_tokens, option count_tokens).
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
SELECT base_url AS anthropic_url FROM llm.provider WHERE name = 'claude' \gset
SELECT llm.create_provider('claude_count', 'anthropic', :'anthropic_url', api_key => 'sk-mock',
                           options => '{"count_tokens": true}');
SELECT llm.create_provider('claude_badkey', 'anthropic', :'anthropic_url', api_key => 'sk-wrong',
                           options => '{"count_tokens": true}');
-- one model on three routes: priced OpenAI-style first, a counting
-- Anthropic route second, an unpriced relay last
SELECT llm.add_model('est', 'mock', 'mock', priority => 1,
                     input_usd_per_mtok => 1, output_usd_per_mtok => 2, cached_input_usd_per_mtok => 0.25);
SELECT llm.add_model('est', 'claude_count', 'claude-est', priority => 2,
                     input_usd_per_mtok => 3, output_usd_per_mtok => 15, batch_price_factor => 0.5);
SELECT llm.add_model('est', 'relay', 'relay-est', priority => 3);
SELECT llm.add_model('est-badcount', 'claude_badkey', 'claude-est', input_usd_per_mtok => 3, output_usd_per_mtok => 15);
SELECT llm.add_model('est-free', 'mock', 'mock');

-- 1. three prompts (a NULL and an empty one are not sent); output is the
-- stated default of 256 a request; the Anthropic route is counted by the
-- provider (here the mock's word count: 4 words + 3 + 5)
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT * FROM llm.estimate(ARRAY['Classify this ticket please', NULL, '', 'Xin chào các bạn', 'SELECT 1 + 2;'], 'est');
-- nothing was sent but the three counts
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print("chat requests:", s["requests"], "count_tokens:", s["count_tokens"])'
-- the counts are what the provider bills: the same prompts sent for real
SELECT llm.chat(p, 'claude-est-direct') FROM (VALUES ('x')) v(p) WHERE false;
SELECT llm.add_model('claude-est-direct', 'claude_count', 'claude-est');
SELECT count(*) FROM (SELECT llm.chat(p, 'claude-est-direct')
                      FROM unnest(ARRAY['Classify this ticket please', 'Xin chào các bạn', 'SELECT 1 + 2;']) p) s;
SELECT wait_until($$SELECT count(*) = 3 FROM llm.usage WHERE model = 'claude-est-direct'$$, 'recorded');
SELECT sum(input_tokens) AS billed_input_tokens FROM llm.usage WHERE model = 'claude-est-direct';
-- what the count_tokens request carried: the input, not max_tokens
\! curl -s http://127.0.0.1:$MOCK_PORT/_requests | python3 -c 'import json,sys; r=[x for x in json.load(sys.stdin) if x["path"].endswith("/count_tokens")]; print(len(r) and sorted(r[0]["body"].keys()), r and r[0]["headers"].get("x-api-key"))'

-- 2. max_tokens is the output of each request; the system prompt counts
SELECT provider, requests, input_tokens, output_tokens, cost_usd, batch_cost_usd
FROM llm.estimate(ARRAY['one', 'two'], 'est', 'Answer in one word.', '{"max_tokens": 10}');
-- a system prompt long enough for OpenAI's automatic prompt cache is
-- priced at the cached-input price after the first request
SELECT provider, requests, input_tokens, cost_usd
FROM llm.estimate(ARRAY['one', 'two', 'three'], 'est', repeat('policy clause ', 1200), '{"max_tokens": 1}')
WHERE provider = 'mock';
-- 3 requests of 2,410 tokens (the system prompt 2,403 of them), 2 of whose
-- system prompts are read from the cache, and 3 output tokens
SELECT round(((7230 - 2 * 2403) * 1 + 2 * 2403 * 0.25 + 3 * 2) / 1e6, 8) AS expected_cost;

-- 3. within the caller's budget, or not
CREATE ROLE regress_llm_est_user;
GRANT USAGE ON SCHEMA llm TO regress_llm_est_user;
GRANT EXECUTE ON FUNCTION llm.estimate(text[], text, text, jsonb), llm.estimate_job(text) TO regress_llm_est_user;
SELECT llm.set_budget('regress_llm_est_user', 0.001);
SET ROLE regress_llm_est_user;
SELECT provider, cost_usd, within_budget FROM llm.estimate(ARRAY['short'], 'est', NULL, '{"max_tokens": 100}');
SELECT provider, cost_usd, within_budget FROM llm.estimate(array_fill('short'::text, ARRAY[10]), 'est', NULL, '{"max_tokens": 100}');
RESET ROLE;
SELECT llm.set_budget('regress_llm_est_user', NULL, 5);
SET ROLE regress_llm_est_user;
SELECT provider, requests, within_budget FROM llm.estimate(array_fill('short'::text, ARRAY[6]), 'est-free');
RESET ROLE;

-- 4. a model without prices says so: no cost, never 0
SELECT * FROM llm.estimate(ARRAY['hello'], 'est-free');

-- 5. bad input: refused before anything is counted or sent
SELECT * FROM llm.estimate(ARRAY['hello'], 'no-such-model');
SELECT * FROM llm.estimate(ARRAY['hello'], 'est', NULL, '{"temprature": 0}');
SELECT * FROM llm.estimate(ARRAY['hello'], 'est', NULL, '{"cache": "yes"}');
SELECT * FROM llm.estimate(NULL, 'est');
SELECT * FROM llm.estimate(ARRAY[['a', 'b'], ['c', 'd']], 'est');
-- an estimate over a query that errors raises that error
SELECT * FROM llm.estimate(array(SELECT (1 / (i - 2))::text FROM generate_series(1, 3) i), 'est');
-- a provider that cannot count: its error, naming it
SELECT * FROM llm.estimate(ARRAY['hello'], 'est-badcount');
-- the option is a boolean
SELECT llm.alter_provider('claude_count', options => '{"count_tokens": "yes"}');
-- an empty array: no requests, nothing to pay
SELECT provider, requests, input_tokens, output_tokens, cost_usd FROM llm.estimate('{}', 'est');

-- 6. a job's rows without a result
CREATE TABLE est_tickets (id int PRIMARY KEY, body text, label text);
INSERT INTO est_tickets SELECT i, 'ticket number ' || i, NULL FROM generate_series(1, 5) i;
UPDATE est_tickets SET label = 'done' WHERE id <= 2;
SELECT llm.create_job('est_job', 'est_tickets', '{id}', 'Label: {body}', 'label', model => 'est',
                      options => '{"max_tokens": 5}', track_changes => false);
SELECT provider, requests, input_tokens, output_tokens, cost_usd, batch_cost_usd, within_budget
FROM llm.estimate_job('est_job');
-- the same as an estimate over the rendered prompts
SELECT provider, requests, input_tokens FROM llm.estimate(
    array(SELECT 'Label: ' || body FROM est_tickets WHERE label IS NULL), 'est', NULL, '{"max_tokens": 5}');
SELECT * FROM llm.estimate_job('no_such_job');
SELECT llm.drop_job('est_job');
DROP TABLE est_tickets;

SELECT llm.drop_model('est');
SELECT llm.drop_model('est-badcount');
SELECT llm.drop_model('est-free');
SELECT llm.drop_model('claude-est-direct');
SELECT llm.drop_provider('claude_count');
SELECT llm.drop_provider('claude_badkey');
SELECT llm.set_budget('regress_llm_est_user', NULL, NULL);
REVOKE ALL ON FUNCTION llm.estimate(text[], text, text, jsonb), llm.estimate_job(text) FROM regress_llm_est_user;
REVOKE USAGE ON SCHEMA llm FROM regress_llm_est_user;
DROP ROLE regress_llm_est_user;
