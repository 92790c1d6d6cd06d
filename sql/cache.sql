-- The response cache: what is kept and served (llm.cache, the option
-- cache), what never is (errors, refusals, cut replies, another role's,
-- another upstream model's, expired ones), the table's bound, TRUNCATE,
-- chat_many's identical prompts coalesced, and what cost_report says the
-- cache saved.  Each case counts what the mock received.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
SELECT llm.add_model('kc', 'mock', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('kc-fail', 'mock', 'mock?fail=400&message=bad+request');
SELECT llm.add_model('kc-refuse', 'mock', 'mock?refusal=I+cannot+help');
SELECT llm.add_model('kc-cut', 'mock', 'mock?stop=length');
TRUNCATE llm.cache;
SHOW llm.cache;

-- 1. deterministic (the default): a request with temperature 0 is sent
-- once, then served; the hit is a usage row with outcome cache and cost 0
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat('What is 2 + 2?', 'kc', NULL, '{"temperature": 0}');
SELECT llm.chat('What is 2 + 2?', 'kc', NULL, '{"temperature": 0}');
SELECT llm.chat('What is 2 + 2?', 'kc', NULL, '{"temperature": 0.0, "user": "someone else"}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
-- another system prompt, other options: another request
SELECT llm.chat('What is 2 + 2?', 'kc', 'Be brief.', '{"temperature": 0}') IS NOT NULL;
SELECT llm.chat('What is 2 + 2?', 'kc', NULL, '{"temperature": 0, "max_tokens": 50}') IS NOT NULL;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
-- without temperature 0 nothing is cached, unless the call asks
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT count(llm.chat('Tell me a story', 'kc')) FROM generate_series(1, 2);
SELECT count(llm.chat('Tell me a story', 'kc', NULL, '{"cache": true}')) FROM generate_series(1, 2);
SELECT count(llm.chat('What is 3 + 3?', 'kc', NULL, '{"temperature": 0, "cache": false}')) FROM generate_series(1, 2);
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
-- llm.cache = off and on
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SET llm.cache = off;
SELECT count(llm.chat('What is 4 + 4?', 'kc', NULL, '{"temperature": 0}')) FROM generate_series(1, 2);
SET llm.cache = on;
SELECT count(llm.chat('Tell me a poem', 'kc')) FROM generate_series(1, 2);
RESET llm.cache;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
-- chat_completion keeps the whole response, apart from llm.chat's text
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "What is 2 + 2?"}], "temperature": 0}', 'kc')->'choices'->0->'message'->>'content';
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "What is 2 + 2?"}], "temperature": 0}', 'kc')->'choices'->0->'message'->>'content';
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
SELECT model, kind, provider, upstream_model, finish_reason, input_tokens, output_tokens, cost_usd, expires_at > now() AS expires
FROM llm.cache ORDER BY created_at, kind;

-- streams are cached only when asked; a stream's kept reply serves
-- llm.chat too, and a hit is one row
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT string_agg(c, '') FROM llm.chat_stream('Stream me', 'kc', NULL, '{"temperature": 0}') c;
SELECT string_agg(c, '') FROM llm.chat_stream('Stream me', 'kc', NULL, '{"temperature": 0}') c;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
SELECT count(*), string_agg(c, '|') FROM llm.chat_stream('Stream me', 'kc', NULL, '{"temperature": 0, "cache": true}') c;
SELECT count(*), string_agg(c, '|') FROM llm.chat_stream('Stream me', 'kc', NULL, '{"temperature": 0, "cache": true}') c;
SELECT llm.chat('Stream me', 'kc', NULL, '{"temperature": 0}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
-- a stream cut short is not kept
SELECT llm.add_model('kc-stream-cut', 'mock', 'mock?fault=truncate');
SELECT count(*) FROM llm.chat_stream('Cut me', 'kc-stream-cut', NULL, '{"cache": true, "on_error": "null"}') c;
SELECT count(*) FROM llm.cache WHERE model = 'kc-stream-cut';

-- 2. never kept: an error, a refusal, a reply cut at max_tokens
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat('x', 'kc-fail', NULL, '{"temperature": 0, "on_error": "null"}');
SELECT llm.chat('x', 'kc-fail', NULL, '{"temperature": 0, "on_error": "null"}');
SELECT llm.chat('x', 'kc-refuse', NULL, '{"temperature": 0, "on_error": "null"}');
SELECT llm.chat('x', 'kc-refuse', NULL, '{"temperature": 0, "on_error": "null"}');
SELECT count(llm.chat('x', 'kc-cut', NULL, '{"temperature": 0}')) FROM generate_series(1, 2);
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
SELECT count(*) FROM llm.cache WHERE model <> 'kc';

-- 3. a route whose upstream model changed is not served its old replies
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat('What is 5 + 5?', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
SELECT llm.add_model('kc', 'mock', 'mock?reply=upgraded', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.chat('What is 5 + 5?', 'kc', NULL, '{"temperature": 0}');
SELECT llm.add_model('kc', 'mock', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'

-- 4. time to live: the setting, or the route's own
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SET llm.cache_ttl = '1s';
SELECT llm.chat('What is 6 + 6?', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
SELECT pg_sleep(1.2);
SELECT llm.chat('What is 6 + 6?', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
RESET llm.cache_ttl;
UPDATE llm.model SET cache_ttl = '0' WHERE name = 'kc';
SELECT llm.chat('What is 7 + 7?', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
SELECT reply, expires_at FROM llm.cache WHERE reply = 'echo: What is 7 + 7?';
UPDATE llm.model SET cache_ttl = NULL WHERE name = 'kc';
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'

-- 5. TRUNCATE: the next call misses, the one after hits
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
TRUNCATE llm.cache;
SELECT count(llm.chat('What is 2 + 2?', 'kc', NULL, '{"temperature": 0}')) FROM generate_series(1, 3);
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'

-- 6. the size bound: the oldest replies go first
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SET llm.cache_max_rows = 3;
SELECT count(llm.chat('Number ' || g, 'kc', NULL, '{"temperature": 0}')) FROM generate_series(1, 8) g;
SELECT count(*) <= 3 AS bounded FROM llm.cache;
SELECT llm.prune_cache(1);
SELECT count(*) FROM llm.cache;
RESET llm.cache_max_rows;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'

-- 7. chat_many: 20 identical prompts are one provider call
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
TRUNCATE llm.cache;
SELECT count(*), count(DISTINCT content), count(error)
FROM llm.chat_many(array_fill('What is 8 + 8?'::text, ARRAY[20]), 'kc', NULL, '{"temperature": 0}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
SELECT count(*), count(DISTINCT content)
FROM llm.chat_many(array_fill('What is 8 + 8?'::text, ARRAY[5]) || ARRAY['What is 9 + 9?'], 'kc', NULL, '{"temperature": 0}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'

-- 8. roles: a role is never served another role's reply, and sees only
-- its own rows; an administrator may share the cache
CREATE ROLE regress_llm_kc_alice;
CREATE ROLE regress_llm_kc_bob;
GRANT USAGE ON SCHEMA llm TO regress_llm_kc_alice, regress_llm_kc_bob;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb) TO regress_llm_kc_alice, regress_llm_kc_bob;
GRANT SELECT ON llm.cache TO regress_llm_kc_alice, regress_llm_kc_bob;
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SET ROLE regress_llm_kc_alice;
SELECT llm.chat('The secret plan', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
SELECT count(*) FROM llm.cache;
SET ROLE regress_llm_kc_bob;
SELECT llm.chat('The secret plan', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
SELECT count(*) FROM llm.cache;
SET llm.cache_scope = shared;
RESET ROLE;
SET llm.cache_scope = shared;
SET ROLE regress_llm_kc_alice;
SELECT llm.chat('A shared question', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
SET ROLE regress_llm_kc_bob;
SELECT llm.chat('A shared question', 'kc', NULL, '{"temperature": 0}') IS NOT NULL;
RESET ROLE;
RESET llm.cache_scope;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'

-- 9. the usage rows and what cost_report says the cache saved
SELECT wait_until($$SELECT count(*) = 68 FROM llm.usage WHERE model = 'kc'$$, 'recorded');
SELECT outcome, count(*) > 0 AS some, bool_and(cost_usd = 0) AS free, bool_and(attempts = 0) AS unsent,
       bool_and(input_tokens > 0) AS tokens
FROM llm.usage WHERE model = 'kc' GROUP BY outcome ORDER BY outcome;
SELECT model, calls, cache_calls, saved_cache_usd > 0 AS saved,
       saved_cache_usd = (SELECT round(sum(input_tokens * 1 / 1e6 + output_tokens * 2 / 1e6), 6)
                          FROM llm.usage WHERE model = 'kc' AND outcome = 'cache') AS priced_right,
       saved_usd = saved_cache_usd AS all_from_the_cache
FROM llm.cost_report() WHERE model = 'kc';

-- what a kept reply saves is what its call paid, as llm.usage books it:
-- prompt-cache writes at their premium, the priority tier at its price
SELECT llm.add_model('kc-write', 'claude', 'mock?cache_write=40', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('kc-tier', 'mock', 'mock?tier=priority', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.chat('A write to the prompt cache', 'kc-write', NULL, '{"temperature": 0}') IS NOT NULL;
SELECT llm.chat('A call at the priority tier', 'kc-tier', NULL, '{"temperature": 0}') IS NOT NULL;
SELECT wait_until($$SELECT count(*) = 2 FROM llm.usage WHERE model IN ('kc-write', 'kc-tier')$$, 'recorded');
SELECT c.model, c.cost_usd = round(u.cost_usd, 8) AS as_paid,
       c.cost_usd > round((c.input_tokens * 1 + c.output_tokens * 2) / 1e6, 8) AS above_list_price
FROM llm.cache c JOIN llm.usage u ON u.model = c.model AND u.outcome = 'ok'
WHERE c.model IN ('kc-write', 'kc-tier') ORDER BY 1;
SELECT llm.drop_model('kc-write');
SELECT llm.drop_model('kc-tier');

-- 10. bad input is refused
SELECT llm.chat('x', 'kc', NULL, '{"cache": "yes"}');
SELECT llm.chat('x', 'kc', NULL, '{"cache": 1}');
SELECT llm.chat('x', 'kc', NULL, '{"cache": null}');
SELECT * FROM llm.chat_many(ARRAY['x'], 'kc', NULL, '{"cache": "on"}');
-- (the range a refusal names has units from PostgreSQL 18 on: left out)
DO $$ BEGIN SET llm.cache_ttl = -1; EXCEPTION WHEN invalid_parameter_value THEN
    RAISE NOTICE '%', regexp_replace(SQLERRM, ' \([^()]*\)$', '');
END $$;
SET llm.cache = sometimes;
UPDATE llm.model SET cache_ttl = '-1 hour' WHERE name = 'kc';
SET ROLE regress_llm_kc_alice;
SET llm.cache_scope = shared;
SET llm.cache_max_rows = 10;
TRUNCATE llm.cache;
-- nobody but the extension plants a reply for others to be served
INSERT INTO llm.cache (key, role_oid, scope, model, provider, upstream_model, kind, reply)
VALUES ('\x00', 0, 'shared', 'kc', 'mock', 'mock', 'text', 'planted');
UPDATE llm.cache SET reply = 'planted';
DELETE FROM llm.cache;
SELECT llm.prune_cache();
RESET ROLE;
-- embeddings are not cached: the option is refused there
SELECT llm.embed('x', 'kc', '{"cache": true}');
SELECT llm.prune_cache(-1);

-- 11. budgets: a hit is free.  It uses no call of a budget in calls (nor
-- a rate-limit turn), and it is served when the budget is spent; only what
-- goes to the provider is refused
-- (an endpoint of its own, the mock under another path, since the traffic
-- control counts by endpoint: its requests of the last minute are this
-- section's alone, whatever came before and however slowly it runs)
\set kc_url 'http://127.0.0.1:' :mock_port '/kc/v1'
SELECT llm.create_provider('kc_mock', 'openai', :'kc_url', api_key => 'sk-mock');
SELECT llm.add_model('kc-budget', 'kc_mock', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
CREATE ROLE regress_llm_kc_carol;
GRANT USAGE ON SCHEMA llm TO regress_llm_kc_carol;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb), llm.chat_many, llm.chat_stream, llm.enqueue TO regress_llm_kc_carol;
SELECT llm.set_budget('regress_llm_kc_carol', NULL, 2);
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SET ROLE regress_llm_kc_carol;
SELECT llm.chat('Budget question one', 'kc-budget', NULL, '{"temperature": 0}');
SELECT llm.chat('Budget question one', 'kc-budget', NULL, '{"temperature": 0}') FROM generate_series(1, 3);
SELECT count(*), count(error) FROM llm.chat_many(array_fill('Budget question one'::text, ARRAY[5]), 'kc-budget', NULL, '{"temperature": 0}');
SELECT llm.chat('Budget question two', 'kc-budget', NULL, '{"temperature": 0}');
-- the budget is spent: a new question is refused before it is sent ...
SELECT llm.chat('Budget question three', 'kc-budget', NULL, '{"temperature": 0}');
SELECT * FROM llm.chat_many(ARRAY['Budget question three'], 'kc-budget', NULL, '{"temperature": 0}');
-- ... and what the cache holds is still served, on every path
SELECT llm.chat('Budget question one', 'kc-budget', NULL, '{"temperature": 0}');
SELECT count(*), count(error) FROM llm.chat_many(array_fill('Budget question two'::text, ARRAY[3]), 'kc-budget', NULL, '{"temperature": 0}');
SELECT string_agg(x, '') FROM llm.chat_stream('Budget question one', 'kc-budget', NULL, '{"temperature": 0, "cache": true}') x;
SELECT llm.enqueue('Budget question two', 'kc-budget', options => '{"temperature": 0}') AS budget_item \gset
RESET ROLE;
SELECT wait_queue();
SELECT status, reply, error FROM llm.queue WHERE id = :budget_item;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("provider calls:", json.load(sys.stdin)["requests"])'
SELECT requests_last_minute AS turns FROM llm.provider_status WHERE provider = 'kc_mock';
SELECT wait_until($$SELECT count(*) = 16 FROM llm.usage WHERE model = 'kc-budget'$$, 'recorded');
SELECT outcome, count(*) FROM llm.usage WHERE model = 'kc-budget' GROUP BY 1 ORDER BY 1;
SELECT calls_per_month - calls AS calls_left FROM llm.budgets WHERE role = 'regress_llm_kc_carol'::regrole;
SELECT llm.set_budget('regress_llm_kc_carol', NULL, NULL);
REVOKE ALL ON FUNCTION llm.chat(text, text, text, jsonb), llm.chat_many, llm.chat_stream, llm.enqueue FROM regress_llm_kc_carol;
REVOKE USAGE ON SCHEMA llm FROM regress_llm_kc_carol;
DROP ROLE regress_llm_kc_carol;
SELECT llm.drop_model('kc-budget');
SELECT llm.drop_provider('kc_mock');

REVOKE ALL ON llm.cache FROM regress_llm_kc_alice, regress_llm_kc_bob;
REVOKE ALL ON FUNCTION llm.chat(text, text, text, jsonb) FROM regress_llm_kc_alice, regress_llm_kc_bob;
REVOKE USAGE ON SCHEMA llm FROM regress_llm_kc_alice, regress_llm_kc_bob;
DROP ROLE regress_llm_kc_alice;
DROP ROLE regress_llm_kc_bob;
SELECT llm.drop_model('kc');
SELECT llm.drop_model('kc-fail');
SELECT llm.drop_model('kc-refuse');
SELECT llm.drop_model('kc-cut');
SELECT llm.drop_model('kc-stream-cut');
TRUNCATE llm.cache;
