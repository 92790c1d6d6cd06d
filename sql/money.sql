-- Money is never spent silently: a model name without a route, an option
-- one typo away from a known one, a NULL prompt, a failed row among paid
-- ones, an enqueue run twice.  Each case shows what the mock received
-- (its request counter, reset before and read after).
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
SELECT replace(base_url, '/v1', '/deepseek/v1') AS deepseek_url FROM llm.provider WHERE name = 'mock' \gset
SELECT llm.add_model('cheap', 'mock', 'mock?reply=cheap', input_usd_per_mtok => 0.1, output_usd_per_mtok => 0.2);
SELECT llm.add_model('echo', 'mock', 'mock?echo=request');
SELECT llm.add_model('emb-m', 'mock', 'text-embedding-3-small');
-- fails (HTTP 400, not retried) for the prompts that contain "poison"
SELECT llm.add_model('picky', 'mock', 'mock?fail=400&when=poison&message=bad+row',
                     input_usd_per_mtok => 0.1, output_usd_per_mtok => 0.2);
-- streams half its reply, then drops the connection
SELECT llm.add_model('stream-cut', 'mock', 'mock?fault=truncate');
SELECT llm.create_provider('deepseek', 'openai', :'deepseek_url', api_key => 'sk-mock');

-- 1. a name with no row in llm.model is refused before anything is sent,
-- with the aliases it is likely a typo of (case too)
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SHOW llm.pass_through;
SELECT llm.chat('hello', 'chaep');
SELECT llm.chat('hello', 'Cheap');
-- a provider's model that was never routed: the hint names the provider
SELECT llm.chat('hello', 'deepseek-chat');
SELECT llm.chat('hello', 'nothing-like-it');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "hi"}]}', 'chaep');
SELECT llm.chat_completion('{"model": "chaep", "messages": [{"role": "user", "content": "hi"}]}');
SELECT * FROM llm.chat_stream('hello', 'chaep');
SELECT * FROM llm.chat_many(ARRAY['a', 'b'], 'chaep');
SELECT llm.enqueue('hello', 'chaep');
SET llm.default_model = 'chaep';
SELECT llm.chat('hello');
RESET llm.default_model;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
-- the alias itself is served, and priced
SELECT llm.chat('hello', 'cheap');
-- pass-through on purpose: llm.pass_through sends the name to the primary;
-- a provider with the option pass_through takes such names itself
SET llm.pass_through = on;
SELECT llm.chat('hello', 'mock?reply=passed%20through');
RESET llm.pass_through;
SELECT llm.alter_provider('deepseek', options => '{"pass_through": "yes"}');
SELECT llm.alter_provider('deepseek', options => '{"pass_through": true}');
SELECT llm.chat('hello', 'mock?reply=taken%20by%20deepseek');
SELECT llm.alter_provider('deepseek', options => '{}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'

-- 2. an option key one typo away from a known one is refused; keys far
-- from every known name pass through, and extra_body sends keys unchecked
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat('x', 'cheap', options => '{"temprature": 0}');
SELECT llm.chat('x', 'cheap', options => '{"max_token": 5}');
SELECT llm.chat('x', 'cheap', options => '{"Temperature": 0}');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "hi"}], "respone_format": {"type": "json_object"}}', 'cheap');
SELECT llm.enqueue('x', 'cheap', options => '{"top_q": 0.5}');
SELECT * FROM llm.chat_many(ARRAY['a'], 'cheap', options => '{"sead": 1}');
SELECT llm.chat('x', 'cheap', options => '{"extra_body": 3}');
SELECT llm.chat('x', 'cheap', options => '{"extra_body": {"temperature": 1}, "temperature": 0}');
SELECT llm.chat('x', 'cheap', options => '{"on_error": "ignore"}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
SELECT llm.chat('x', 'echo', options => '{"top_k": 40, "my_server_flag": true, "extra_body": {"top_q": 0.5}, "on_error": "raise"}')::jsonb
       - 'model' - 'messages' AS sent;

-- 3. a NULL prompt gives NULL, and nothing is sent
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat(NULL, 'cheap') IS NULL AS chat,
       llm.chat_completion(NULL, 'cheap') IS NULL AS chat_completion,
       llm.enqueue(NULL, 'cheap') IS NULL AS enqueue;
SELECT c IS NULL AS null_row FROM llm.chat_stream(NULL, 'cheap') c;
SELECT ord, content, error FROM llm.chat_many(ARRAY['one', NULL], 'cheap') ORDER BY ord;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'

-- one bad row among paid ones: without on_error the statement fails and
-- every paid reply is rolled back; with on_error "null" the bad row gets
-- NULL and a WARNING, and the paid replies are kept
CREATE TABLE reviews_m (id int PRIMARY KEY, body text, sentiment text);
INSERT INTO reviews_m VALUES (1, 'great'), (2, 'awful'), (3, NULL), (4, 'poison'), (5, 'fine');
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
UPDATE reviews_m SET sentiment = llm.chat('Classify: ' || body, 'picky');
SELECT count(sentiment) AS labels_kept FROM reviews_m;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
UPDATE reviews_m SET sentiment = llm.chat('Classify: ' || body, 'picky', options => '{"on_error": "null"}');
SELECT id, sentiment FROM reviews_m ORDER BY id;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
-- the same for chat_completion and chat_stream (a NULL row, after any rows)
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "poison"}], "on_error": "null"}', 'picky') IS NULL AS chat_completion;
SELECT c FROM llm.chat_stream('poison', 'picky', options => '{"on_error": "null"}') c;
SELECT string_agg(coalesce(c, '<NULL>'), '|') AS rows FROM llm.chat_stream('one two poison', 'stream-cut', options => '{"on_error": "null"}') c;
SELECT llm.chat('', 'picky', options => '{"on_error": "null"}') IS NULL AS empty_prompt;
-- a bad argument still raises: every row would fail alike
SELECT llm.chat('poison', 'picky', options => '{"on_error": "null", "temperature": 9}');
-- and so does a cancel
SELECT llm.add_model('slow', 'mock', 'mock?latency=5000');
SET statement_timeout = '300ms';
SELECT llm.chat('x', 'slow', options => '{"on_error": "null"}');
RESET statement_timeout;
DROP TABLE reviews_m;


-- the usage rows of the failed calls say why
SELECT wait_until('SELECT count(*) >= 5 FROM llm.usage WHERE model IN (''picky'', ''stream-cut'') AND outcome = ''error''', 'written');
SELECT mode, model, outcome, http_status, error FROM llm.usage
WHERE model IN ('picky', 'stream-cut') AND outcome <> 'ok' ORDER BY mode, error;

-- 4. an enqueue run again before the first has drained pays nothing more:
-- the same request for the same row returns the waiting item's id
CREATE TABLE tickets_m (id int PRIMARY KEY, body text, label text);
INSERT INTO tickets_m SELECT g, 'ticket ' || g FROM generate_series(1, 20) g;
SELECT llm.add_model('triage', 'mock', 'mock', input_usd_per_mtok => 0.1, output_usd_per_mtok => 0.2);
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
BEGIN;
CREATE TEMP TABLE first_run AS
SELECT id, llm.enqueue('Triage: ' || body, 'triage', target_table => 'tickets_m', target_column => 'label',
                       target_key => jsonb_build_object('id', id)) AS item
FROM tickets_m;
SELECT count(*) FILTER (WHERE f.item = llm.enqueue('Triage: ' || t.body, 'triage', target_table => 'tickets_m',
                                                   target_column => 'label', target_key => jsonb_build_object('id', t.id)))
       AS same_items
FROM tickets_m t JOIN first_run f USING (id);
SELECT count(*) AS queued FROM llm.queue WHERE target_table = 'tickets_m'::regclass;
-- another request for a row is queued; add queues the same one again;
-- replace removes the row's pending items first
SELECT llm.enqueue('Triage: ticket 1', 'triage', system => 'Be brief.', target_table => 'tickets_m',
                   target_column => 'label', target_key => '{"id": 1}') <> item AS other_request_queued
FROM first_run WHERE id = 1;
SELECT llm.enqueue('Triage: ticket 2', 'triage', target_table => 'tickets_m', target_column => 'label',
                   target_key => '{"id": 2}', if_queued => 'add') <> item AS added
FROM first_run WHERE id = 2;
SELECT llm.enqueue('Triage again: ticket 3', 'triage', target_table => 'tickets_m', target_column => 'label',
                   target_key => '{"id": 3}', if_queued => 'replace') <> item AS replaced
FROM first_run WHERE id = 3;
SELECT count(*) AS queued, count(*) FILTER (WHERE target_key = '{"id": 3}') AS for_row_3
FROM llm.queue WHERE target_table = 'tickets_m'::regclass;
SELECT llm.enqueue('x', 'triage', target_table => 'tickets_m', target_column => 'label',
                   target_key => '{"id": 3}', if_queued => 'twice');
ROLLBACK;
-- the way it is paid for: twice the same statement, one added, one replaced
BEGIN;
SELECT count(llm.enqueue('Triage: ' || body, 'triage', target_table => 'tickets_m', target_column => 'label',
                         target_key => jsonb_build_object('id', id))) FROM tickets_m;
SELECT count(llm.enqueue('Triage: ' || body, 'triage', target_table => 'tickets_m', target_column => 'label',
                         target_key => jsonb_build_object('id', id))) FROM tickets_m;
SELECT llm.enqueue('Triage: ticket 2', 'triage', target_table => 'tickets_m', target_column => 'label',
                   target_key => '{"id": 2}', if_queued => 'add') IS NOT NULL AS added;
SELECT llm.enqueue('Triage again: ticket 3', 'triage', target_table => 'tickets_m', target_column => 'label',
                   target_key => '{"id": 3}', if_queued => 'replace') IS NOT NULL AS replaced;
SELECT status, count(*) FROM llm.queue WHERE target_table = 'tickets_m'::regclass GROUP BY status;
COMMIT;
SELECT wait_queue();
-- 21 requests: the 20 rows once, and the one added on purpose
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
SELECT id, label FROM tickets_m WHERE id <= 3 ORDER BY id;
DROP TABLE tickets_m;

-- 5. a key the provider refuses twice: nothing more is sent with it, calls
-- fail at once, until the key changes
SELECT base_url AS mock_url FROM llm.provider WHERE name = 'mock' \gset
SELECT llm.create_provider('badkey', 'openai', :'mock_url', api_key => 'sk-wrong');
SELECT llm.add_model('wrongkey', 'badkey', 'mock');
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
\set VERBOSITY terse
SELECT llm.chat('one', 'wrongkey');
SELECT llm.chat('two', 'wrongkey');
SELECT llm.chat('three', 'wrongkey');
SELECT llm.chat('four', 'wrongkey', options => '{"on_error": "null"}') IS NULL AS four;
SELECT ord, error ~ '^provider "badkey" refused its key: It answered HTTP 401 at ' AS refused
FROM llm.chat_many(ARRAY['five', 'six'], 'wrongkey') ORDER BY ord;
\set VERBOSITY default
SELECT provider, cooldown_until > now() AS paused,
       cooldown_reason ~ '^authentication failed at .* \(HTTP 401\): fix the key with llm.alter_provider$' AS says_why
FROM llm.provider_status WHERE provider = 'badkey';
-- two requests, not six
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
SELECT llm.alter_provider('badkey', api_key => 'sk-mock');
SELECT llm.chat('seven', 'wrongkey');
SELECT cooldown_reason FROM llm.provider_status WHERE provider = 'badkey';

-- 6. a host that cannot be reached: after two failed attempts its circuit
-- is open for the whole cluster, and the fallback route serves at once
SELECT llm.create_provider('dead', 'openai', 'http://127.0.0.1:1/v1', api_key => 'sk-x',
                           options => '{"max_retries": 2}');
SELECT llm.add_model('resilient', 'dead', 'm', priority => 1);
SELECT llm.add_model('resilient', 'relay', 'mock?reply=from%20the%20fallback', priority => 2);
SELECT llm.chat('call ' || g, 'resilient') FROM generate_series(1, 5) g;
SELECT provider, cooldown_until > now() AS down,
       cooldown_reason ~ '^down since .*: Failed to connect' AS says_why
FROM llm.provider_status WHERE provider = 'dead';
-- the last route down fails at once, with the host's last error
SELECT llm.add_model('deadonly', 'dead', 'm');
\set VERBOSITY terse
SELECT llm.chat('x', 'deadonly');
\set VERBOSITY default
-- attempts on the dead host: the first call's two, none after (without
-- the circuit each call made three before its fallback: 20 in all); each
-- is a row of its own (outcome retry), without tokens or cost: the host
-- was never reached
SELECT wait_until('SELECT count(*) >= 7 FROM llm.usage WHERE model = ''resilient''', 'written');
SELECT count(*) FILTER (WHERE outcome <> 'retry') AS calls,
       count(*) FILTER (WHERE provider = 'dead') AS attempts_on_dead,
       count(*) FILTER (WHERE fallback AND outcome <> 'retry') AS by_fallback,
       bool_and(outcome = 'retry' AND input_tokens IS NULL AND coalesce(cost_usd, 0) = 0)
           FILTER (WHERE provider = 'dead') AS unbilled
FROM llm.usage WHERE model = 'resilient';
SELECT llm.drop_provider('dead');
SELECT llm.drop_provider('badkey');
-- a reply slower than the provider's timeout on a connection already open
-- says nothing of the host: three at once (a worker's inline batches, a
-- chat_many) leave its circuit closed, and the next call goes out
-- (localhost: an endpoint of its own, apart from the mock's)
SELECT llm.create_provider('slowpoke', 'openai', replace(:'mock_url', '127.0.0.1', 'localhost'),
                           api_key => 'sk-mock', options => '{"max_retries": 0, "timeout_ms": 500}');
SELECT llm.add_model('slowpoke-fast', 'slowpoke', 'mock');
SELECT llm.add_model('slowpoke-slow', 'slowpoke', 'mock?latency=3000');
SELECT count(*) FILTER (WHERE error IS NULL) AS answered FROM llm.chat_many(ARRAY['a', 'b', 'c'], 'slowpoke-fast');
SELECT ord, error ~ '^request to provider "slowpoke" timed out: Operation timed out after' AS timed_out
FROM llm.chat_many(ARRAY['c', 'd', 'e'], 'slowpoke-slow') ORDER BY ord;
SELECT provider, cooldown_until, cooldown_reason FROM llm.provider_status WHERE provider = 'slowpoke';
SELECT llm.chat('still up', 'slowpoke-fast');
SELECT llm.drop_provider('slowpoke');

-- 8. misconfiguration is said at once: a key's variable the server does not
-- have, and a database no worker serves (once a session)
SELECT llm.create_provider('envless', 'openai', 'http://127.0.0.1:1/v1', api_key_env => 'PG_LLM_NO_SUCH_VARIABLE');
SELECT llm.alter_provider('envless', api_key_env => 'PG_LLM_STILL_NO_SUCH_VARIABLE');
SELECT llm.drop_provider('envless');
SELECT current_database() AS regress_db \gset
CREATE DATABASE regress_llm_money_unserved;
\c regress_llm_money_unserved
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', :'mock_url', api_key => 'sk-mock', options => '{"pass_through": true}');
SELECT llm.enqueue('x', 'mock') IS NOT NULL AS queued;
SELECT llm.enqueue('y', 'mock') IS NOT NULL AS queued_again;
\c :regress_db
DROP DATABASE regress_llm_money_unserved;

-- 9. a prompt or an input of nothing but white space is an empty one:
-- refused, or its row answered with the error, and nothing is sent (a
-- job queues no item for such a row); what goes is the chat request of
-- 'fine' and the embedding input 'words'
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat(E' \n\t ', 'cheap');
SELECT llm.chat(E'\r\n', 'cheap', options => '{"on_error": "null"}') IS NULL AS blank_gives_null;
SELECT ord, content, error FROM llm.chat_many(ARRAY['fine', E'  \n'], 'cheap') ORDER BY ord;
SELECT string_agg(c, '') FROM llm.chat_stream('   ', 'cheap') c;
SELECT llm.enqueue(E'\t', 'cheap');
SELECT llm.embed('  ', 'emb-m');
SELECT ord, error FROM llm.embed_many(ARRAY['  ', 'words'], 'emb-m') ORDER BY ord;
SELECT llm.classify(' ', ARRAY['a', 'b'], 'cheap');
SELECT requests FROM llm.estimate(ARRAY['one', '   ', E'\n'], 'cheap');
CREATE TABLE blank_m (id int PRIMARY KEY, body text, reply text);
INSERT INTO blank_m VALUES (1, E' \n '), (2, ''), (3, E'\t');
SELECT llm.create_job('blank-m', 'blank_m', '{id}', '{body}', 'reply', model => 'cheap', track_changes => false);
SELECT llm.run_job('blank-m') AS queued;
SELECT count(*) AS items FROM llm.queue WHERE job = 'blank-m';
SELECT llm.drop_job('blank-m');
DROP TABLE blank_m;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print("requests", s["requests"], "embedding inputs", s["embeddings"]["inputs"])'

SELECT llm.drop_provider('deepseek');
SELECT llm.drop_model('triage'), llm.drop_model('cheap'), llm.drop_model('echo'), llm.drop_model('picky'), llm.drop_model('slow'),
       llm.drop_model('stream-cut'), llm.drop_model('emb-m');
