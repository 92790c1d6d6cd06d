-- Protocol fidelity: what real providers send beyond a plain reply, from
-- the event sequences of their references, as the mock sends them:
-- Anthropic's cumulative message_delta usage, cached and reasoning tokens,
-- the service tier, n > 1, refusals and every finish and stop reason on
-- every path, errors inside streams, error bodies of web frameworks, and
-- parallel_tool_calls.  llm.usage must book what the provider bills.
-- model names carry the mock's directives: sent unchanged to the primary
SET llm.pass_through = on;
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port

-- a call's error as a value, so that one query can show every path
CREATE FUNCTION pt_try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE q INTO r;
    RETURN r;
EXCEPTION WHEN OTHERS THEN
    RETURN 'ERROR: ' || SQLERRM;
END;
$$;
-- the usage rows of the models named like a pattern, once written
CREATE FUNCTION pt_usage_written(pattern text, n int) RETURNS text LANGUAGE sql AS $$
    SELECT wait_until(format('SELECT count(*) >= %s FROM llm.usage WHERE model LIKE %L', n, pattern),
                      'written');
$$;

-- 1. Anthropic streams count input in message_delta: it is cumulative, and
-- with server tools (web search) the real input count arrives only there
-- (message_start said 2 tokens; the search results added 11,471)
SELECT llm.add_model('p-search', 'claude', 'claude-search?web_search=11471',
                     input_usd_per_mtok => 3, output_usd_per_mtok => 15);
SELECT string_agg(c, '') FROM llm.chat_stream('two words', 'p-search') c;
SELECT llm.chat('two words', 'p-search');
SELECT ord, content, error FROM llm.chat_many(ARRAY['two words'], 'p-search');
SELECT llm.enqueue('two words', 'p-search') IS NOT NULL AS queued;
SELECT wait_queue();
SELECT pt_usage_written('p-search', 4);
SELECT mode, outcome, input_tokens, output_tokens, cost_usd,
       cost_usd = (input_tokens * 3 + output_tokens * 15) / 1e6 AS cost_is_the_tokens
FROM llm.usage WHERE model = 'p-search' ORDER BY mode;

-- 2. prompt caches: Anthropic reads (at the cached-input price) and writes
-- (at 1.25 times the input price, 2 times for the one-hour cache); OpenAI
-- cached tokens (part of prompt_tokens) and reasoning tokens (part of
-- completion_tokens)
SELECT llm.add_model('p-cache', 'claude', 'claude?cached=1000&cache_write=100&cache_write_1h=40',
                     input_usd_per_mtok => 3, output_usd_per_mtok => 15, cached_input_usd_per_mtok => 0.3);
SELECT llm.add_model('p-reason', 'mock', 'mock?cached=1920&reasoning=192',
                     input_usd_per_mtok => 2.5, output_usd_per_mtok => 10, cached_input_usd_per_mtok => 1.25);
SELECT llm.add_model('p-nocachedprice', 'mock', 'mock?cached=1920',
                     input_usd_per_mtok => 2.5, output_usd_per_mtok => 10);
SELECT llm.chat('two words', 'p-cache');
SELECT string_agg(c, '') FROM llm.chat_stream('two words', 'p-cache') c;
SELECT llm.chat('two words', 'p-reason');
SELECT string_agg(c, '') FROM llm.chat_stream('two words', 'p-reason') c;
SELECT llm.chat('two words', 'p-nocachedprice');
SELECT r->'usage' AS usage FROM llm.chat_completion('{"messages": [{"role": "user", "content": "two words"}]}', 'p-cache') r;
SELECT wait_until('SELECT count(*) >= 6 FROM llm.usage WHERE model IN (''p-cache'', ''p-reason'', ''p-nocachedprice'')',
                  'written');
SELECT model, mode, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
       reasoning_tokens, service_tier, cost_usd
FROM llm.usage WHERE model IN ('p-cache', 'p-reason', 'p-nocachedprice') ORDER BY model, mode;
-- the same tokens at the input price alone would cost more
SELECT model, round(cost_usd / ((input_tokens * (CASE WHEN model = 'p-cache' THEN 3 ELSE 2.5 END)
                                 + output_tokens * (CASE WHEN model = 'p-cache' THEN 15 ELSE 10 END)) / 1e6), 4)
       AS share_of_uncached_price
FROM llm.usage WHERE model IN ('p-cache', 'p-reason', 'p-nocachedprice') AND mode = 'sync' ORDER BY model;

-- 3. the service tier that served a call: flex is billed at batch rates,
-- priority at the route's priority multiple
SELECT llm.add_model('p-flex', 'mock', 'mock?tier=flex', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('p-priority', 'mock', 'mock?tier=priority', input_usd_per_mtok => 1, output_usd_per_mtok => 2,
                     priority_price_factor => 1.75);
SELECT llm.add_model('p-default', 'mock', 'mock?tier=default', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.chat('two words', 'p-flex'), llm.chat('two words', 'p-priority'), llm.chat('two words', 'p-default');
SELECT string_agg(c, '') FROM llm.chat_stream('two words', 'p-flex') c;
SELECT pt_usage_written('p-flex', 2), pt_usage_written('p-priority', 1), pt_usage_written('p-default', 1);
SELECT model, mode, service_tier, cost_usd, round(cost_usd / ((input_tokens * 1 + output_tokens * 2) / 1e6), 2) AS factor
FROM llm.usage WHERE model IN ('p-flex', 'p-priority', 'p-default') ORDER BY model, mode;
SELECT llm.add_model('p-bad', 'mock', cached_input_usd_per_mtok => -1);
SELECT llm.add_model('p-bad', 'mock', priority_price_factor => -1);

-- 4. choices are matched by index: a server that sends two choices (the
-- second one first) gives choice 0's text, never a mix
SELECT string_agg(c, '') FROM llm.chat_stream('red apple', 'mock?choices=2') c;
SELECT llm.chat('red apple', 'mock?choices=2');
SELECT content FROM llm.chat_many(ARRAY['red apple'], 'mock?choices=2');
-- n > 1 on a call that returns one text is refused before it is sent
SELECT llm.chat_stream('x', 'mock', options => '{"n": 2}');
SELECT llm.chat('x', 'mock', options => '{"n": 2}');
SELECT llm.chat_many(ARRAY['x'], 'mock', options => '{"n": 2}');
SELECT llm.enqueue('x', 'mock', options => '{"n": 2}');
-- chat_completion returns every choice; usage counts them all
SELECT jsonb_path_query_array(r, '$.choices[*].message.content') AS contents, r->'usage'->'completion_tokens' AS completion
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "red apple"}], "n": 2}', 'mock') r;

-- 5. endings: one behaviour on every path.  A reply with text is
-- returned (cut at max_tokens too, its finish reason says so); a refusal
-- or a content filter is an error that quotes it, a tool call, a paused
-- turn or no text at all an error that names the reason; llm.usage's
-- outcome and finish_reason say what happened
\set VERBOSITY default
SELECT llm.chat('x', 'mock?refusal=I%20cannot%20help%20with%20that.');
SELECT llm.chat_stream('x', 'mock?refusal=I%20cannot%20help%20with%20that.');
SELECT ord, content, error FROM llm.chat_many(ARRAY['x'], 'mock?refusal=I%20cannot%20help%20with%20that.');
SELECT r->'choices'->0->'message' AS message
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "x"}]}', 'mock?refusal=No.') r;
-- a refusal is quoted with a key the provider echoed redacted, and cut
SELECT llm.chat('x', 'mock?refusal=Not%20with%20key%20sk-mock' || repeat('%20no', 300));
-- and its control characters shown escaped, as every provider text's: a
-- newline cannot start a line of its own in psql or the server log
SELECT llm.chat('x', 'mock?refusal=Not%20now.%0AERROR:%20%20forged%0D%09%1B[0m');
SELECT ord, error FROM llm.chat_many(ARRAY['x'], 'mock?refusal=Not%20now.%0AERROR:%20forged');
CREATE TABLE pt_refused (id int PRIMARY KEY, reply text);
INSERT INTO pt_refused VALUES (1);
SELECT llm.enqueue('x', 'mock?refusal=Not%20now.%0AERROR:%20forged', target_table => 'pt_refused',
                   target_column => 'reply', target_key => '{"id": 1}') IS NOT NULL AS queued;
SELECT wait_queue();
SELECT status, error FROM llm.queue WHERE target_table = 'pt_refused'::regclass;
DROP TABLE pt_refused;
-- so are an answer's words that a validation error quotes (a property name)
SELECT llm.extract('x', '{"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}',
                   'mock?reply=%7B%22b%0AERROR:%20forged%22:%201%7D');
-- an answer with a shape is not asked again after a refusal (the mock
-- counts one request): the same prompt gets the same refusal
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.classify('x', ARRAY['yes', 'no'], 'mock?refusal=I%20will%20not%20label%20that.');
SELECT label, error FROM llm.chat_many(ARRAY['x'], 'mock?refusal=No.', options => '{"json_schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}') m(ord, label, error);
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
-- Anthropic stops a reply half way with stop_reason "refusal": the rows
-- already sent, then the error
SELECT llm.add_model('a-refusal-half', 'claude', 'claude?refusal=1&reply=Here%20is%20how%20to');
SELECT llm.chat_stream('x', 'a-refusal-half');
SELECT llm.chat('x', 'a-refusal-half');
-- no text: a length ending (reasoning spent the tokens), a content filter
SELECT llm.chat_stream('x', 'mock?reply=&stop=length&reasoning=64');
SELECT llm.chat('x', 'mock?reply=&stop=length&reasoning=64');
SELECT llm.chat_stream('x', 'mock?reply=&stop=content_filter');
SELECT llm.chat_stream('x', 'mock?reply=partial%20text&stop=content_filter');
\set VERBOSITY terse
-- every stop_reason of the Anthropic reference and every finish_reason of
-- OpenAI's, on the sync, stream and many paths
SELECT count(llm.add_model('a-' || reason, 'claude', 'claude?stop=' || reason))
FROM unnest(ARRAY['end_turn', 'max_tokens', 'stop_sequence', 'tool_use', 'pause_turn', 'refusal',
                  'model_context_window_exceeded']) reason;
SELECT reason,
       pt_try(format('SELECT llm.chat(%L, %L)', 'a b', 'a-' || reason)) AS sync,
       pt_try(format('SELECT string_agg(c, '''') FROM llm.chat_stream(%L, %L) c', 'a b', 'a-' || reason)) AS stream,
       (SELECT coalesce(content, 'ERROR: ' || error) FROM llm.chat_many(ARRAY['a b'], 'a-' || reason)) AS many
FROM unnest(ARRAY['end_turn', 'max_tokens', 'stop_sequence', 'tool_use', 'pause_turn', 'refusal',
                  'model_context_window_exceeded']) reason;
SELECT reason,
       pt_try(format('SELECT llm.chat(%L, %L)', 'a b', 'mock?stop=' || reason)) AS sync,
       pt_try(format('SELECT string_agg(c, '''') FROM llm.chat_stream(%L, %L) c', 'a b', 'mock?stop=' || reason)) AS stream
FROM unnest(ARRAY['stop', 'length', 'content_filter', 'tool_calls']) reason;
-- the queue and its usage rows
CREATE TABLE pt_endings (reason text PRIMARY KEY, reply text);
INSERT INTO pt_endings (reason) VALUES ('end_turn'), ('max_tokens'), ('tool_use'), ('pause_turn'), ('refusal');
SELECT count(llm.enqueue('a b', 'a-' || reason, target_table => 'pt_endings', target_column => 'reply',
                         target_key => jsonb_build_object('reason', reason))) FROM pt_endings;
SELECT wait_queue();
SELECT e.reason, e.reply, q.status, q.error
FROM pt_endings e JOIN llm.queue q ON q.target_key->>'reason' = e.reason AND q.target_table = 'pt_endings'::regclass
ORDER BY e.reason;
SELECT pt_usage_written('a-%', 28);
SELECT model, mode, outcome, finish_reason, count(*)
FROM llm.usage WHERE model LIKE 'a-%' OR model LIKE 'mock?stop=%'
   OR (model LIKE 'mock?refusal=%' AND model NOT LIKE 'mock?refusal=Not%') OR model LIKE 'mock?reply=&stop=%'
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2;

-- 6. an error event inside a stream, before its first row, is judged by
-- its type and code like an HTTP status: a bad key or a bad request is
-- not sent again, an overloaded provider is
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
\set VERBOSITY default
SELECT llm.chat_stream('x', 'mock?fault=error_event&reply=&error_code=invalid_api_key&error_type=invalid_request_error&message=Incorrect%20API%20key%20provided.');
SELECT llm.add_model('p-inband-auth', 'claude', 'claude?fault=error_event&reply=&error_type=authentication_error&message=invalid%20x-api-key');
SELECT llm.chat_stream('x', 'p-inband-auth');
SELECT llm.add_model('p-inband-bad', 'claude', 'claude?fault=error_event&reply=&error_type=invalid_request_error&message=prompt%20is%20too%20long');
SELECT llm.chat_stream('x', 'p-inband-bad');
SELECT llm.add_model('p-inband-quota', 'claude', 'claude?fault=error_event&reply=&error_type=billing_error&message=Your%20credit%20balance%20is%20too%20low');
SELECT llm.chat_stream('x', 'p-inband-quota');
-- (an exhausted account left the provider alone, as a 402 does; the
-- in-stream bad keys counted toward a refused key, as 401s do)
SELECT cooldown_reason FROM llm.provider_status WHERE provider = 'claude';
SELECT llm.clear_cooldown('claude'), llm.clear_cooldown('mock');
SELECT llm.add_model('p-inband-busy', 'claude', 'claude?fault=error_event&cut_after=0&times=1&error_type=overloaded_error&message=Overloaded');
SELECT llm.chat_stream('one', 'p-inband-busy');
\set VERBOSITY terse
-- each was sent once, except the overloaded one, sent again
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,re,sys; d=json.load(sys.stdin)["by_key"]; [print(n, re.search("error_(?:code|type)=([a-z_]+)", k).group(1)) for k, n in sorted(d.items(), key=lambda kv: kv[0][::-1])]'

-- an error event that stands for a 429 or a 529 (Anthropic's
-- rate_limit_error and overloaded_error, OpenAI's in-band rate limit) cools
-- the provider down for the cluster as the HTTP status does, before the
-- stream's first row or after it; an in-stream exhausted account is out of
-- quota as a 402 is.  Providers of their own (another path on the mock is
-- another endpoint), without retries.
SELECT llm.create_provider('p-cool-a', 'anthropic', (SELECT replace(base_url, '/anthropic/', '/cool/anthropic/') FROM llm.provider WHERE name = 'claude'),
                           api_key => 'sk-mock', options => '{"max_retries": 0}');
SELECT llm.create_provider('p-cool-o', 'openai', (SELECT replace(base_url, '/v1', '/cool/v1') FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock', options => '{"max_retries": 0}');
SELECT llm.create_provider('p-cool-q', 'anthropic', (SELECT replace(base_url, '/anthropic/', '/quota/anthropic/') FROM llm.provider WHERE name = 'claude'),
                           api_key => 'sk-mock', options => '{"max_retries": 0}');
SELECT llm.add_model('p-cool-busy', 'p-cool-a', 'claude?fault=error_event&cut_after=0&error_type=overloaded_error&message=Overloaded');
SELECT llm.add_model('p-cool-limited', 'p-cool-a', 'claude?fault=error_event&cut_after=2&error_type=rate_limit_error&message=Slow%20down');
SELECT llm.add_model('p-cool-rpm', 'p-cool-o', 'mock?fault=error_event&cut_after=0&error_code=rate_limit_exceeded&error_type=requests&message=Rate%20limit%20reached');
SELECT llm.add_model('p-cool-credit', 'p-cool-q', 'claude?fault=error_event&cut_after=0&error_type=billing_error&message=Your%20credit%20balance%20is%20too%20low');
\set VERBOSITY terse
SELECT llm.chat_stream('one', 'p-cool-busy');
SELECT provider, cooldown_until > now() AS cooling, cooldown_reason FROM llm.provider_status WHERE provider = 'p-cool-a';
SELECT llm.clear_cooldown('p-cool-a');
SELECT llm.chat_stream('one two three four', 'p-cool-limited');
SELECT provider, cooldown_until > now() AS cooling, cooldown_reason, rate_limited_last_minute
FROM llm.provider_status WHERE provider = 'p-cool-a';
SELECT llm.chat_stream('one', 'p-cool-rpm');
SELECT provider, cooldown_until > now() AS cooling, cooldown_reason, rate_limited_last_minute
FROM llm.provider_status WHERE provider = 'p-cool-o';
SELECT llm.chat_stream('one', 'p-cool-credit');
SELECT provider, cooldown_until > now() AS disabled, cooldown_reason FROM llm.provider_status WHERE provider = 'p-cool-q';
SELECT llm.clear_cooldown(name) FROM llm.provider WHERE name LIKE 'p-cool-%';

-- 7. error bodies of the web frameworks relays are built on: the message
-- beside "error" is read
\set VERBOSITY default
SELECT llm.chat('x', 'mock?fail=400&error_shape=express&message=Unexpected%20token%20%7D%20in%20JSON%20at%20position%2012');
SELECT llm.chat('x', 'mock?fail=413&error_shape=express&message=request%20entity%20too%20large');
SELECT llm.chat('x', 'mock?fail=404&error_shape=fastify&message=Route%20POST%3A%2Fv1%2Fchat%2Fcompletions%20not%20found');
SELECT llm.chat('x', 'mock?fail=404&error_shape=fastapi&message=Not%20Found');
SELECT llm.chat('x', 'mock?fail=422&error_shape=fastapi_list&message=field%20required');
SELECT llm.chat('x', 'mock?fail=401&error_shape=oauth&message=The%20access%20token%20expired');
-- a 500 is not "rate-limiting"; a streamed tool call points to chat_completion
SELECT llm.chat('x', 'mock?fail=500&should_retry=false');
SELECT llm.chat_stream('call tool now', 'mock', options => '{"tools": [{"type": "function", "function": {"name": "lookup"}}]}');
\set VERBOSITY terse

-- 8. parallel_tool_calls false reaches Anthropic as
-- tool_choice.disable_parallel_tool_use, never dropped
SELECT llm.add_model('p-haiku', 'claude', 'claude-haiku');
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT r->'choices'->0->>'finish_reason' AS finish
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "call tool"}], "parallel_tool_calls": false,
                           "tools": [{"type": "function", "function": {"name": "lookup"}}]}', 'p-haiku') r;
SELECT r->'choices'->0->>'finish_reason' AS finish
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "call tool"}], "parallel_tool_calls": false,
                           "tool_choice": "required", "tools": [{"type": "function", "function": {"name": "lookup"}}]}', 'p-haiku') r;
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": false}', 'p-haiku') IS NOT NULL AS no_tools;
\! curl -s http://127.0.0.1:$MOCK_PORT/_requests | python3 -c 'import json,sys; [print(json.dumps(r["body"].get("tool_choice"))) for r in json.load(sys.stdin)]'
SELECT llm.chat('x', 'mock', options => '{"parallel_tool_calls": "no"}');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "high"}', 'p-haiku');

-- 9. provider batches: the same judgement of each answer and the same
-- usage details, at the batch price (a relay's inline /batches)
SELECT llm.create_provider('p-inline', 'openai', (SELECT base_url FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock', options => '{"batch_api": "inline"}');
SELECT llm.add_model('p-b-cached', 'p-inline', 'mock?cached=1000&reasoning=50', input_usd_per_mtok => 2,
                     output_usd_per_mtok => 4, cached_input_usd_per_mtok => 0.5);
SELECT llm.add_model('p-b-flex', 'p-inline', 'mock?tier=flex', input_usd_per_mtok => 2, output_usd_per_mtok => 4);
SELECT llm.add_model('p-b-refusal', 'p-inline', 'mock?refusal=I%20will%20not.');
SELECT llm.add_model('p-b-filter', 'p-inline', 'mock?stop=content_filter');
SELECT llm.add_model('p-b-tool', 'p-inline', 'mock?stop=tool_calls');
SELECT llm.add_model('p-b-empty', 'p-inline', 'mock?reply=&stop=length');
CREATE TABLE pt_batch (model text PRIMARY KEY, reply text);
INSERT INTO pt_batch (model) VALUES ('p-b-cached'), ('p-b-flex'), ('p-b-refusal'), ('p-b-filter'), ('p-b-tool'), ('p-b-empty');
SELECT count(llm.enqueue('two words', model, target_table => 'pt_batch', target_column => 'reply',
                         target_key => jsonb_build_object('model', model), via => 'batch_api')) FROM pt_batch;
SELECT wait_queue();
SELECT b.model, b.reply, q.status, q.error
FROM pt_batch b JOIN llm.queue q ON q.target_key->>'model' = b.model AND q.target_table = 'pt_batch'::regclass
ORDER BY b.model;
SELECT pt_usage_written('p-b-%', 6);
SELECT model, mode, outcome, finish_reason, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens,
       service_tier, cost_usd
FROM llm.usage WHERE model LIKE 'p-b-%' ORDER BY model;

-- Groq streams put their usage in x_groq.usage on the last chunk: read
-- there, as the same call's usage without a stream is, not estimated
SELECT llm.add_model('p-groq', 'mock', 'mock?fault=groq_usage', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT string_agg(c, '') FROM llm.chat_stream('two words', 'p-groq') c;
SELECT llm.chat('two words', 'p-groq');
SELECT pt_usage_written('p-groq', 2);
SELECT mode, input_tokens, output_tokens, estimated, cost_usd FROM llm.usage WHERE model = 'p-groq' ORDER BY mode;

DROP TABLE pt_batch;
DROP TABLE pt_endings;
DROP FUNCTION pt_try(text);
DROP FUNCTION pt_usage_written(text, int);
