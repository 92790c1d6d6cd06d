-- Synchronous calls against the local mock provider (OpenAI protocol).
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
SELECT llm.chat('hello there', 'mock');
SELECT llm.chat('Is this review positive? sentiment: great product, fast delivery', 'mock');

-- the default model
SET llm.default_model = 'mock-default';
SELECT llm.chat('no model given');
RESET llm.default_model;

-- enrich rows: one call per row
CREATE TABLE reviews (id int PRIMARY KEY, body text, sentiment text);
INSERT INTO reviews VALUES
  (1, 'I love it, works great'),
  (2, 'Terrible, it broke after a day, I want a refund'),
  (3, 'It is a phone');
UPDATE reviews SET sentiment = llm.chat('Classify the sentiment: ' || body, 'mock');
SELECT id, sentiment FROM reviews ORDER BY id;

-- what is sent: the system prompt and options reach the provider as given
SELECT llm.chat('x', 'mock?echo=request', system => 'be brief',
                options => '{"temperature": 0.2, "max_tokens": 50, "stop": ["\n"], "seed": 7}')::jsonb
       - 'model' AS sent;

-- chat_completion: the normalized response, with the provider's name
SELECT r->'choices'->0->'message'->>'content' AS content,
       r->'choices'->0->>'finish_reason' AS finish_reason,
       r->'usage' AS usage, r->>'provider' AS provider, r->>'object' AS object
FROM llm.chat_completion('{"messages": [{"role": "system", "content": "s"},
                                        {"role": "user", "content": "two words"}]}', 'mock') r;
-- the request's own model is used when no model argument is given
SELECT llm.chat_completion('{"model": "mock", "messages": [{"role": "user", "content": "hi"}]}')->>'model';
-- max_tokens cuts the reply
SELECT r->'choices'->0->'message'->>'content', r->'choices'->0->>'finish_reason'
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 2}', 'mock') r;
-- JSON modes and tools pass through
SELECT (llm.chat_completion('{"messages": [{"role": "user", "content": "answer in JSON"}],
         "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}}',
         'mock')->'choices'->0->'message'->>'content')::jsonb;
SELECT r->'choices'->0->'message'->'tool_calls'->0->'function' AS call,
       r->'choices'->0->'message'->'content' AS content
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "please call tool"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}',
        'mock') r;

-- aliases: a name SQL uses, mapped to an upstream name
SELECT llm.add_model('fast', 'mock', 'mock?reply=from%20mock', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.60);
SELECT llm.add_model('fast', 'relay', 'relay?reply=from%20relay', priority => 200);
SELECT name, provider, upstream_model, priority, input_usd_per_mtok, output_usd_per_mtok
FROM llm.model ORDER BY name, priority;
SELECT llm.chat('hi', 'fast');

-- the one-command switch, and its rollback
SELECT llm.use_provider('relay');
SELECT llm.current_provider();
SELECT llm.chat('hi', 'fast');
SELECT llm.use_provider('mock');
SELECT llm.chat('hi', 'fast');

-- fallback: the first route fails with 503 after its retries, the next serves
SET llm.max_retries = 1;
SELECT llm.add_model('flaky', 'mock', 'mock?fail=503&retry_after=0.05', priority => 1);
SELECT llm.add_model('flaky', 'relay', 'relay?reply=served%20by%20fallback', priority => 2);
SELECT llm.chat('hi', 'flaky');
-- a permanent error does not fall back
SELECT llm.add_model('broken', 'mock', 'mock?fail=400', priority => 1);
SELECT llm.add_model('broken', 'relay', 'relay', priority => 2);
SELECT llm.chat('hi', 'broken');
RESET llm.max_retries;

-- 429 with Retry-After, then success: retried after the wait
SELECT llm.chat('retry me', 'mock?fail=429&times=1&retry_after=0.2');
SELECT llm.chat('retry me ms', 'mock?fail=429&times=2&retry_after_ms=50');
SELECT llm.chat('retry me date', 'mock?fail=503&times=1&retry_after=date:1');

-- a disabled provider is skipped in chains
SELECT llm.alter_provider('mock', enabled => false);
SELECT llm.chat('hi', 'fast');
SELECT llm.alter_provider('mock', enabled => true);

-- the mock's port, for the checks of what it received
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
-- keep-alive: many calls in one statement use one connection
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT count(*) FROM (SELECT llm.chat('call ' || g, 'mock') FROM generate_series(1, 20) g) s;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin); print("requests", s["requests"], "connections", s["connections"])'
