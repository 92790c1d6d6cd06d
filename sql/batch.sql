-- Provider batch APIs: the options and the enqueue checks, then (with the
-- queue worker) a relay's inline /batches end to end.

-- batch_api takes four values, checked against the protocol
SELECT llm.create_provider('b-bad', 'openai', 'http://127.0.0.1:9/v1', options => '{"batch_api": "files"}');
SELECT llm.create_provider('b-bad', 'openai', 'http://127.0.0.1:9/v1', options => '{"batch_api": "anthropic"}');
SELECT llm.create_provider('b-bad', 'anthropic', 'http://127.0.0.1:9/v1', options => '{"batch_api": "inline"}');
SELECT llm.create_provider('b-bad', 'openai', 'http://127.0.0.1:9/v1', options => '{"batch_timeout_ms": 0}');
SELECT llm.create_provider('b-bad', 'openai', 'http://127.0.0.1:9/v1', options => '{"batch_url": "chat"}');
SELECT llm.create_provider('b-bad', 'openai', 'http://127.0.0.1:9/v1', options => '{"batch_url": 7}');
SELECT llm.alter_provider('claude', options => '{"batch_api": "openai"}');
SELECT count(*) FROM llm.provider WHERE name = 'b-bad';
SELECT llm.add_model('b-neg', 'mock', batch_price_factor => -0.5);
SELECT llm.add_model('b-neg', 'mock', input_usd_per_mtok => -1, output_usd_per_mtok => 2);
SELECT llm.add_model('b-neg', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => -2);

-- a provider's batch API, by default from its protocol
SELECT llm.create_provider('b-inline', 'openai', (SELECT base_url FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock',
                           options => '{"batch_api": "inline", "batch_timeout_ms": 20000}');
SELECT llm.create_provider('b-none', 'openai', (SELECT base_url FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock', options => '{"batch_api": "none"}');
SELECT llm.add_model('b-cheap', 'b-inline', 'mock', input_usd_per_mtok => 2, output_usd_per_mtok => 4);
SELECT llm.add_model('b-poison', 'b-inline', 'mock?fail=400&when=poison&message=bad+item');
SELECT llm.add_model('b-nobatch', 'b-none', 'mock');
SELECT name, batch_price_factor FROM llm.model WHERE name LIKE 'b-%' ORDER BY name;

-- via is realtime or batch_api, and batch_api needs a batch API
SELECT llm.enqueue('x', 'b-cheap', via => 'batch');
BEGIN;
SELECT llm.enqueue('x', 'b-cheap', via => NULL) > 0 AS realtime_when_null;
SELECT via FROM llm.queue WHERE prompt = 'x';
ROLLBACK;
SELECT llm.enqueue('x', 'b-nobatch', via => 'batch_api');
\set SHOW_CONTEXT never
SELECT llm.create_job('b-job', 'pg_class', '{oid}', '{relname}', 'reloptions', model => 'b-nobatch',
                      via => 'batch_api');
SELECT llm.create_job('b-job', 'pg_class', '{oid}', '{relname}', 'reloptions', model => 'b-cheap',
                      via => 'nightly');
\set SHOW_CONTEXT errors
DELETE FROM llm.queue;


CREATE TABLE bdocs (id int PRIMARY KEY, body text NOT NULL, summary text);
INSERT INTO bdocs SELECT g, CASE WHEN g % 40 = 0 THEN 'poison ' ELSE 'doc ' END || g
FROM generate_series(1, 120) g;

-- 120 items through the relay's /batches: batches of llm.batch_size, one
-- model each; the relay refuses the requests whose prompt says poison
SELECT count(llm.enqueue(body, CASE WHEN id % 20 = 0 THEN 'b-poison' ELSE 'b-cheap' END,
                         target_table => 'bdocs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM bdocs;
SELECT wait_until('SELECT NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN (''pending'', ''running'', ''submitted''))',
                  'drained');
SELECT model, status, count(*) FROM llm.queue GROUP BY 1, 2 ORDER BY 1, 2;
-- each reply in its own row (results come shuffled, matched by custom_id)
SELECT count(*) FROM bdocs WHERE summary = 'echo: ' || body;
-- the poisoned requests failed alone, with the relay's words
SELECT DISTINCT error FROM llm.queue WHERE status = 'failed';
SELECT kind, status, sum(requests) AS requests, sum(succeeded) AS succeeded, sum(errored) AS errored
FROM llm.batches GROUP BY 1, 2 ORDER BY 1, 2;

-- usage: one row per answered request, at half the price
SELECT wait_until('SELECT count(*) = 120 FROM llm.usage WHERE mode = ''batch_api''', 'usage written');
SELECT model, outcome, count(*), sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       sum(cost_usd) AS cost_usd
FROM llm.usage WHERE mode = 'batch_api' GROUP BY 1, 2 ORDER BY 1, 2;
-- against the same route at realtime prices, all of the saving is the
-- batch price's
SELECT model, calls, paid_usd, baseline_provider, baseline_usd, saved_usd, saved_batch_usd,
       saved_provider_usd, batch_calls
FROM llm.cost_report() WHERE model = 'b-cheap';

-- items whose provider has no batch API any more when they are sent go
-- realtime
UPDATE bdocs SET summary = NULL WHERE id <= 3;
BEGIN;
SELECT count(llm.enqueue(body, 'b-cheap', target_table => 'bdocs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM bdocs WHERE id <= 3;
SELECT llm.alter_provider('b-inline', options => '{"batch_api": "none"}');
COMMIT;
SELECT wait_until('SELECT count(*) = 3 FROM bdocs WHERE id <= 3 AND summary IS NOT NULL', 'written');
SELECT via, status, count(*) FROM llm.queue WHERE (target_key->>'id')::int <= 3 AND batch_id IS NULL
GROUP BY 1, 2;
SELECT llm.alter_provider('b-inline', options => '{"batch_api": "inline"}');

-- a job sends its items the same way
DELETE FROM llm.queue;
UPDATE bdocs SET summary = NULL;
SELECT llm.create_job('b-job', 'bdocs', '{id}', 'job {body}', 'summary', model => 'b-cheap',
                      via => 'batch_api', track_changes => false);
SELECT via FROM llm.job WHERE name = 'b-job';
SELECT llm.run_job('b-job');
SELECT wait_until('SELECT NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN (''pending'', ''running'', ''submitted''))',
                  'drained');
SELECT job, pending, running, submitted, done, failed FROM llm.job_status WHERE job = 'b-job';
SELECT count(*) FROM bdocs WHERE summary = 'echo: job ' || body;
SELECT llm.drop_job('b-job');

-- a target dropped after the enqueue: its items fail before their
-- requests go into a batch (nothing is paid for), the others are written
DELETE FROM llm.queue;
CREATE TABLE bgone (id int PRIMARY KEY, summary text);
INSERT INTO bgone VALUES (1), (2);
UPDATE bdocs SET summary = NULL WHERE id <= 2;
BEGIN;
SELECT count(llm.enqueue('gone ' || id, 'b-cheap', target_table => 'bgone', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM bgone;
SELECT count(llm.enqueue(body, 'b-cheap', target_table => 'bdocs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM bdocs WHERE id <= 2;
DROP TABLE bgone;
COMMIT;
SELECT wait_until('SELECT NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN (''pending'', ''running'', ''submitted''))',
                  'drained');
SELECT prompt, status, error, reply IS NULL AS nothing_paid FROM llm.queue ORDER BY id;
SELECT count(*) FROM bdocs WHERE id <= 2 AND summary = 'echo: ' || body;

-- a request's input tokens are estimated as every call's are (tokens.c),
-- when its budget is reserved and when its result settles it: a result
-- without usage is booked at the estimate llm.estimate shows, and what was
-- reserved is given back whole (nothing stays "under way")
DELETE FROM llm.queue;
SELECT llm.add_model('b-nousage', 'b-inline', 'mock?usage=none', input_usd_per_mtok => 1000, output_usd_per_mtok => 0);
SELECT llm.set_budget(current_user::regrole, 100000);
UPDATE bdocs SET summary = NULL WHERE id <= 20;
SELECT count(llm.enqueue(format('{"id": %s, "tags": ["a", "b"], "n": {"x": 1.5, "y": [1, 2, 3]}}', id), 'b-nousage',
                         target_table => 'bdocs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM bdocs WHERE id <= 20;
SELECT wait_until('SELECT NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN (''pending'', ''running'', ''submitted''))',
                  'drained');
SELECT wait_until('SELECT count(*) = 20 FROM llm.usage WHERE model = ''b-nousage''', 'usage written');
SELECT sum(u.input_tokens) = (SELECT input_tokens FROM llm.estimate(ARRAY(SELECT prompt FROM llm.queue ORDER BY id), 'b-nousage'))
           AS booked_as_estimated,
       bool_and(u.estimated) AS marked_estimated
FROM llm.usage u WHERE u.model = 'b-nousage';
SELECT llm.set_budget(current_user::regrole, 0.000001);
DO $$
DECLARE
    d text;
BEGIN
    PERFORM llm.chat('x', 'b-cheap');
EXCEPTION WHEN configuration_limit_exceeded THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'under way: %', substring(d from '\(([0-9.]+) USD under way\)');
END;
$$;
SELECT llm.set_budget(current_user::regrole, NULL);
SELECT llm.drop_model('b-nousage');

DROP TABLE bdocs;
DELETE FROM llm.queue;
SELECT llm.drop_model('b-cheap'), llm.drop_model('b-poison'), llm.drop_model('b-nobatch');
SELECT llm.drop_provider('b-inline'), llm.drop_provider('b-none');
