-- Faults from the provider: each gives a clear error with an SQLSTATE and
-- leaves the backend healthy for the next call.
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
\set VERBOSITY default
\set ON_ERROR_STOP 0
SET llm.max_retries = 1;

-- 500 forever: retried with backoff, then reported
SELECT llm.chat('x', 'mock?fail=500');
-- 429 forever, with a Retry-After the call is willing to wait for
SELECT llm.chat('x', 'mock?fail=429&retry_after=0.05');
-- a Retry-After above llm.max_retry_after is not waited for, and neither
-- is the cooldown it starts for the provider (a provider of its own here:
-- the cooldown holds for every caller of the endpoint)
SELECT replace(base_url, '/v1', '/slow-down/v1') AS slow_url FROM llm.provider WHERE name = 'mock' \gset
SELECT llm.create_provider('slow-down', 'openai', :'slow_url', api_key => 'sk-mock');
SELECT llm.add_model('slow-down', 'slow-down', 'mock?fail=429&retry_after=30&when=first');
SET llm.max_retry_after = 1;
SELECT llm.chat('first', 'slow-down');
SELECT llm.chat('second', 'slow-down');
RESET llm.max_retry_after;
SELECT llm.drop_provider('slow-down');
-- the mock's port, for the checks of what it received
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
-- x-should-retry: false forbids the retry of a 503
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT llm.chat('x', 'mock?fail=503&should_retry=false');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; print("requests", json.load(sys.stdin)["requests"])'
-- exhausted quota is not retried (and the endpoint is left alone for its
-- quota_cooldown: a provider of its own here)
SELECT replace(base_url, '/v1', '/broke/v1') AS broke_url FROM llm.provider WHERE name = 'mock' \gset
SELECT llm.create_provider('broke', 'openai', :'broke_url', api_key => 'sk-mock');
SELECT llm.add_model('broke', 'broke', 'mock?fail=429&quota=1');
SELECT llm.chat('x', 'broke');
SELECT llm.chat('x', 'broke');
SELECT llm.drop_provider('broke');
-- 401, 403, 404 and 422 are permanent
SELECT llm.chat('x', 'mock?fail=401');
SELECT llm.chat('x', 'mock?fail=404');
SELECT llm.chat('x', 'mock?fail=422');

-- broken bodies
SELECT llm.chat('x', 'mock?fault=malformed');
SELECT llm.chat('x', 'mock?fault=notjson');
SELECT llm.chat('x', 'mock?fault=html');
SELECT llm.chat('x', 'mock?fault=empty_choices');
SELECT llm.chat('x', 'mock?fault=null_content');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}]}', 'mock?fault=null_content')->'choices'->0->'message';
-- DeepSeek-style blank lines before the JSON body are fine
SELECT llm.chat('keep alive', 'mock?fault=leading_ws');
-- invalid UTF-8 in a reply becomes U+FFFD
SELECT llm.chat('x', 'mock?fault=badutf8');
-- a reply over the size cap
SET llm.max_response_size = '64kB';
SELECT llm.chat('x', 'mock?fault=big&bytes=200000');
RESET llm.max_response_size;

-- transport failures: a reset connection (retried, then reported), a hang
-- past the timeout, an unreachable port
SELECT llm.chat('x', 'mock?fault=reset');
SELECT llm.chat('x', 'mock?fault=reset&times=1');
-- (libcurl's own words in the DETAIL vary between versions and runs)
\set VERBOSITY terse
SET llm.timeout = '300ms';
SET llm.max_retries = 0;
SELECT llm.chat('x', 'mock?fault=hang');
RESET llm.timeout;
SELECT llm.create_provider('nowhere', 'openai', 'http://127.0.0.1:9/v1');
SELECT llm.add_model('nowhere', 'nowhere', 'm');
SELECT llm.chat('x', 'nowhere');
\set VERBOSITY default

-- statement_timeout and cancel stop a hanging call with the normal error
SET statement_timeout = '200ms';
SELECT llm.chat('x', 'mock?fault=hang');
RESET statement_timeout;
-- the backend is healthy afterwards
SELECT llm.chat('still alive', 'mock');
RESET llm.max_retries;
