-- pg_llm against @copilotkit/aimock, a third-party OpenAI/Anthropic mock
-- (test/compat/run.sh).  The replies come from the fixtures in fixtures/,
-- matched on the last user message (and on the system prompt, the turn,
-- the tools or the model where a case says so).  Each "-- case:" line
-- starts a case; ids and timestamps are left out of what is selected.
-- What aimock received comes from its request journal, fetched with curl
-- into the psql variable journal and read by the two functions below.
-- aimock serves both protocols under one /v1 prefix: /v1/chat/completions
-- and /v1/messages.
\set openai_url 'http://127.0.0.1:' :aimock_port '/v1'
SET statement_timeout = '30s';
-- fail fast: a case that wants a retry says so
SET llm.max_retries = 0;
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('oai', 'openai', :'openai_url', api_key => :'aimock_key');
SELECT llm.create_provider('claude', 'anthropic', :'openai_url', api_key => :'aimock_key');
SELECT llm.add_model('gpt', 'oai', 'gpt-4o-mini');
SELECT llm.add_model('haiku', 'claude', 'claude-3-5-haiku');
-- models aimock treats as reasoning models
SELECT llm.add_model('gpt-reasoner', 'oai', 'o3-mini');
SELECT llm.add_model('claude-reasoner', 'claude', 'claude-sonnet-4-5');
-- the same aimock under a key it does not accept
SELECT llm.create_provider('oai-badkey', 'openai', :'openai_url', api_key => 'sk-wrong-key');
SELECT llm.create_provider('claude-badkey', 'anthropic', :'openai_url', api_key => 'sk-wrong-key');
SELECT llm.add_model('gpt-badkey', 'oai-badkey', 'gpt-4o-mini');
SELECT llm.add_model('haiku-badkey', 'claude-badkey', 'claude-3-5-haiku');
SELECT llm.use_provider('oai');
-- the last request aimock received: the headers pg_llm sets (aimock
-- redacts the keys) and the body as aimock read it; for the Anthropic
-- protocol aimock journals the body translated to the OpenAI shape
CREATE FUNCTION last_request(journal jsonb) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb := journal->-1;
    h text;
    k text;
BEGIN
    RETURN NEXT format('%s %s -> %s', e->>'method', e->>'path', e#>>'{response,status}');
    FOREACH h IN ARRAY ARRAY['content-type', 'accept', 'anthropic-version', 'authorization', 'x-api-key'] LOOP
        RETURN NEXT format('header %s: %s', h, coalesce(e->'headers'->>h, '(absent)'));
    END LOOP;
    FOR k IN SELECT jsonb_object_keys(e->'body') ORDER BY 1 LOOP
        CONTINUE WHEN k = '_endpointType';
        RETURN NEXT format('body %s: %s', k, e->'body'->k);
    END LOOP;
END;
$$;
-- the requests aimock received whose last user message contains a text,
-- with the status it answered each with
CREATE FUNCTION requests_for(journal jsonb, prompt text) RETURNS text
LANGUAGE sql AS $$
    SELECT format('aimock saw %s request(s): %s', count(*), string_agg(e#>>'{response,status}', ', ' ORDER BY n))
    FROM jsonb_array_elements(journal) WITH ORDINALITY j(e, n)
    WHERE strpos((SELECT m->>'content' FROM jsonb_array_elements(e#>'{body,messages}') WITH ORDINALITY x(m, i)
                  WHERE m->>'role' = 'user' ORDER BY i DESC LIMIT 1), prompt) > 0;
$$;

-- case: plain chat [openai]
SELECT llm.chat('compat plain: say hello', 'gpt');
-- case: plain chat [anthropic]
SELECT llm.chat('compat plain: say hello', 'haiku');

-- case: non-ASCII text both ways [openai]
SELECT llm.chat('compat unicode: crème brûlée ☕ 日本', 'gpt');
-- case: non-ASCII text both ways [anthropic]
SELECT llm.chat('compat unicode: crème brûlée ☕ 日本', 'haiku');

-- the fixture that answers as a pirate matches only when aimock sees the
-- system prompt; without it another fixture answers
-- case: system prompt [openai]
SELECT llm.chat('compat system: who are you?', 'gpt', system => 'You are a pirate.');
SELECT llm.chat('compat system: who are you?', 'gpt');
-- case: system prompt [anthropic]
SELECT llm.chat('compat system: who are you?', 'haiku', system => 'You are a pirate.');
SELECT llm.chat('compat system: who are you?', 'haiku');
-- case: system message in chat_completion [openai]
SELECT llm.chat_completion('{"messages": [{"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "compat system: who are you?"}]}', 'gpt')->'choices'->0->'message'->>'content';
-- case: system message in chat_completion [anthropic]
SELECT llm.chat_completion('{"messages": [{"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "compat system: who are you?"}]}', 'haiku')->'choices'->0->'message'->>'content';

-- the normalized response: OpenAI's shape whichever protocol served it,
-- with the usage aimock reports and the provider's name
-- case: chat_completion shape [openai]
SELECT r - 'id' - 'created' AS response, r->>'id' ~ '^chatcmpl-' AS openai_id,
       jsonb_typeof(r->'created') AS created
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat shape: count my tokens"}]}', 'gpt') r;
-- case: chat_completion shape [anthropic]
SELECT r - 'id' - 'created' AS response, r->>'id' ~ '^msg_' AS anthropic_id,
       jsonb_typeof(r->'created') AS created
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat shape: count my tokens"}]}', 'haiku') r;
-- the request's own model is used when no model argument is given
-- case: chat_completion with the request's model [openai]
SELECT r->>'provider' AS provider, r->>'model' AS model, r->'choices'->0->'message'->>'content' AS content
FROM llm.chat_completion('{"model": "gpt", "messages": [{"role": "user", "content": "compat plain: say hello"}]}') r;
-- case: chat_completion with the request's model [anthropic]
SELECT r->>'provider' AS provider, r->>'model' AS model, r->'choices'->0->'message'->>'content' AS content
FROM llm.chat_completion('{"model": "haiku", "messages": [{"role": "user", "content": "compat plain: say hello"}]}') r;

-- a reply cut at max_tokens: "length" in either protocol
-- case: finish_reason length [openai]
SELECT r->'choices'->0->'message'->>'content' AS content, r->'choices'->0->>'finish_reason' AS finish_reason, r->'usage' AS usage
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat length: run out of tokens"}], "max_tokens": 5}', 'gpt') r;
-- case: finish_reason length [anthropic]
SELECT r->'choices'->0->'message'->>'content' AS content, r->'choices'->0->>'finish_reason' AS finish_reason, r->'usage' AS usage
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat length: run out of tokens"}], "max_tokens": 5}', 'haiku') r;

-- what aimock received: the headers pg_llm sets and the body it read
-- case: what reaches the wire [openai]
SELECT llm.chat('compat wire: echo nothing', 'gpt', system => 'be brief',
                options => '{"temperature": 0.3, "max_tokens": 20}');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT last_request(:'journal') \g (tuples_only=on format=unaligned)
-- case: what reaches the wire [anthropic]
SELECT llm.chat('compat wire: echo nothing', 'haiku', system => 'be brief',
                options => '{"temperature": 0.3}');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT last_request(:'journal') \g (tuples_only=on format=unaligned)

-- a conversation: the fixture for the second turn matches only when the
-- earlier assistant turn reached aimock
-- case: multi-turn messages [openai]
SELECT llm.chat_completion('{"messages": [
    {"role": "system", "content": "Remember names."},
    {"role": "user", "content": "compat multi-turn: my name is Ada"},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": "compat multi-turn: what is my name?"}]}', 'gpt')->'choices'->0->'message'->>'content';
SELECT llm.chat('compat multi-turn: what is my name?', 'gpt');
-- case: multi-turn messages [anthropic]
SELECT llm.chat_completion('{"messages": [
    {"role": "system", "content": "Remember names."},
    {"role": "user", "content": "compat multi-turn: my name is Ada"},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": "compat multi-turn: what is my name?"}]}', 'haiku')->'choices'->0->'message'->>'content';
SELECT llm.chat('compat multi-turn: what is my name?', 'haiku');

-- JSON mode: response_format passes through to OpenAI; for Anthropic
-- pg_llm asks for JSON in the system prompt, which the fixture matches
-- case: JSON mode [openai]
SELECT (llm.chat_completion('{"messages": [{"role": "user", "content": "compat json: give the answer"}],
    "response_format": {"type": "json_object"}}', 'gpt')->'choices'->0->'message'->>'content')::jsonb AS answer;
-- case: JSON mode [anthropic]
SELECT (llm.chat_completion('{"messages": [{"role": "user", "content": "compat json: give the answer"}],
    "response_format": {"type": "json_object"}}', 'haiku')->'choices'->0->'message'->>'content')::jsonb AS answer;

-- reasoning (OpenAI's reasoning_content, Anthropic's thinking block) is
-- not part of the reply text; chat_completion keeps OpenAI's field as the
-- provider sent it and drops Anthropic's block
-- case: reasoning kept out of the reply [openai]
SELECT llm.chat('compat reasoning: what is 2+2?', 'gpt-reasoner');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "compat reasoning: what is 2+2?"}]}',
                           'gpt-reasoner')->'choices'->0->'message' AS message;
SELECT string_agg(chunk, '') AS streamed FROM llm.chat_stream('compat reasoning: what is 2+2?', 'gpt-reasoner') chunk;
-- case: reasoning kept out of the reply [anthropic]
SELECT llm.chat('compat reasoning: what is 2+2?', 'claude-reasoner');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "compat reasoning: what is 2+2?"}]}',
                           'claude-reasoner')->'choices'->0->'message' AS message;
SELECT string_agg(chunk, '') AS streamed FROM llm.chat_stream('compat reasoning: what is 2+2?', 'claude-reasoner') chunk;

-- tool calls come back as OpenAI tool_calls, arguments as a JSON string
-- case: tool call reply [openai]
SELECT r->'choices'->0->'message'->'tool_calls' AS tool_calls,
       r->'choices'->0->'message'->'content' AS content,
       r->'choices'->0->>'finish_reason' AS finish_reason
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat tool: weather in Oslo?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}', 'gpt') r;
-- case: tool call reply [anthropic]
SELECT r->'choices'->0->'message'->'tool_calls' AS tool_calls,
       r->'choices'->0->'message'->'content' AS content,
       r->'choices'->0->>'finish_reason' AS finish_reason
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat tool: weather in Oslo?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}', 'haiku') r;
-- llm.chat has no text to return for a tool call
-- case: tool call through llm.chat [openai]
SELECT llm.chat('compat tool: weather in Oslo?', 'gpt',
                options => '{"tools": [{"type": "function", "function": {"name": "get_weather"}}]}');
-- case: tool call through llm.chat [anthropic]
SELECT llm.chat('compat tool: weather in Oslo?', 'haiku',
                options => '{"tools": [{"type": "function", "function": {"name": "get_weather"}}]}');
-- text and two tool calls in one reply
-- case: text and parallel tool calls [openai]
SELECT r->'choices'->0->'message'->'content' AS content,
       jsonb_path_query_array(r, '$.choices[0].message.tool_calls[*].id') AS ids,
       jsonb_path_query_array(r, '$.choices[0].message.tool_calls[*].function.arguments') AS arguments,
       r->'choices'->0->>'finish_reason' AS finish_reason
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat tools: weather in Oslo and Rome?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather"}}]}', 'gpt') r;
-- case: text and parallel tool calls [anthropic]
SELECT r->'choices'->0->'message'->'content' AS content,
       jsonb_path_query_array(r, '$.choices[0].message.tool_calls[*].id') AS ids,
       jsonb_path_query_array(r, '$.choices[0].message.tool_calls[*].function.arguments') AS arguments,
       r->'choices'->0->>'finish_reason' AS finish_reason
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat tools: weather in Oslo and Rome?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather"}}]}', 'haiku') r;
-- the tool's result sent back: the fixture matches on its tool_call_id
-- case: tool result round trip [openai]
SELECT r->'choices'->0->'message'->>'content' AS content, r->'choices'->0->>'finish_reason' AS finish_reason
FROM llm.chat_completion('{"messages": [
    {"role": "user", "content": "compat tool: weather in Oslo?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_compat_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "call_compat_1", "content": "14 C"}],
  "tools": [{"type": "function", "function": {"name": "get_weather"}}]}', 'gpt') r;
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT last_request(:'journal') \g (tuples_only=on format=unaligned)
-- case: tool result round trip [anthropic]
SELECT r->'choices'->0->'message'->>'content' AS content, r->'choices'->0->>'finish_reason' AS finish_reason
FROM llm.chat_completion('{"messages": [
    {"role": "user", "content": "compat tool: weather in Oslo?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_compat_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "call_compat_1", "content": "14 C"}],
  "tools": [{"type": "function", "function": {"name": "get_weather"}}]}', 'haiku') r;
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT last_request(:'journal') \g (tuples_only=on format=unaligned)

-- errors aimock injects, reported by pg_llm with the provider's words
-- case: 429 rate limit [openai]
SELECT llm.chat('compat error 429: slow down', 'gpt');
-- case: 429 rate limit [anthropic]
SELECT llm.chat('compat error 429: slow down', 'haiku');
-- case: 500 server error [openai]
SELECT llm.chat('compat error 500: break', 'gpt');
-- case: 500 server error [anthropic]
SELECT llm.chat('compat error 500: break', 'haiku');
-- case: 529 overloaded [anthropic]
SELECT llm.chat('compat error 529: overloaded', 'haiku');
-- a permanent error is not retried: one request although two retries are allowed
-- case: 400 is not retried [openai]
SET llm.max_retries = 2;
SELECT llm.chat('compat error 400: bad request [openai]', 'gpt');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT requests_for(:'journal', 'compat error 400: bad request [openai]') \g (tuples_only=on format=unaligned)
SET llm.max_retries = 0;
-- case: 400 is not retried [anthropic]
SET llm.max_retries = 2;
SELECT llm.chat('compat error 400: bad request [anthropic]', 'haiku');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT requests_for(:'journal', 'compat error 400: bad request [anthropic]') \g (tuples_only=on format=unaligned)
SET llm.max_retries = 0;
-- an account out of credit is not retried either, and says so
-- case: quota exhausted [openai]
SET llm.max_retries = 2;
SELECT llm.chat('compat quota: out of credit [openai]', 'gpt');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT requests_for(:'journal', 'compat quota: out of credit [openai]') \g (tuples_only=on format=unaligned)
-- case: quota exhausted [anthropic]
SELECT llm.chat('compat quota: out of credit [anthropic]', 'haiku');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT requests_for(:'journal', 'compat quota: out of credit [anthropic]') \g (tuples_only=on format=unaligned)
-- the quota answers left both providers alone for their quota_cooldown;
-- credit is back
SELECT llm.clear_cooldown('oai'), llm.clear_cooldown('claude');
SET llm.max_retries = 0;
-- a 429 and then a reply: retried after aimock's Retry-After (1 s), not
-- after pg_llm's own backoff (under 0.5 s for the first retry)
-- case: 429 then success is retried [openai]
SET llm.max_retries = 1;
SELECT llm.chat('compat retry openai: once more', 'gpt') AS reply,
       clock_timestamp() - statement_timestamp() BETWEEN '0.9 s' AND '5 s' AS waited_retry_after;
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT requests_for(:'journal', 'compat retry openai: once more') \g (tuples_only=on format=unaligned)
SET llm.max_retries = 0;
-- case: 429 then success is retried [anthropic]
SET llm.max_retries = 1;
SELECT llm.chat('compat retry anthropic: once more', 'haiku') AS reply,
       clock_timestamp() - statement_timestamp() BETWEEN '0.9 s' AND '5 s' AS waited_retry_after;
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT requests_for(:'journal', 'compat retry anthropic: once more') \g (tuples_only=on format=unaligned)
SET llm.max_retries = 0;
-- a key aimock does not accept
-- case: 401 wrong API key [openai]
SELECT llm.chat('compat plain: say hello', 'gpt-badkey');
-- case: 401 wrong API key [anthropic]
SELECT llm.chat('compat plain: say hello', 'haiku-badkey');
-- a prompt no fixture matches: aimock answers 404
-- case: 404 no fixture matched [openai]
SELECT llm.chat('compat nothing: no fixture for this', 'gpt');
-- case: 404 no fixture matched [anthropic]
SELECT llm.chat('compat nothing: no fixture for this', 'haiku');
-- a 200 whose body is not JSON
-- case: malformed response body [openai]
SELECT llm.chat('compat malformed: garble it', 'gpt');
-- case: malformed response body [anthropic]
SELECT llm.chat('compat malformed: garble it', 'haiku');
-- the connection closed without a response
-- case: connection dropped [openai]
\set VERBOSITY terse
SELECT llm.chat('compat disconnect: hang up', 'gpt');
-- case: connection dropped [anthropic]
SELECT llm.chat('compat disconnect: hang up', 'haiku');
-- no answer within llm.timeout (aimock holds the reply for 2 s)
-- case: request timeout [openai]
SET llm.timeout = '300ms';
SELECT llm.chat('compat slow: take your time', 'gpt');
-- case: request timeout [anthropic]
SELECT llm.chat('compat slow: take your time', 'haiku');
RESET llm.timeout;
\set VERBOSITY default

-- a fallback chain across protocols: the OpenAI route answers 503, the
-- Anthropic route serves
-- case: fallback from openai to anthropic
SELECT llm.add_model('fallback', 'oai', 'gpt-down', priority => 1);
SELECT llm.add_model('fallback', 'claude', 'claude-up', priority => 2);
SELECT r->>'provider' AS provider, r->>'model' AS model, r->'choices'->0->'message'->>'content' AS content
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat fallback: who serves me?"}]}', 'fallback') r;
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT requests_for(:'journal', 'compat fallback: who serves me?') \g (tuples_only=on format=unaligned)

-- streaming: llm.chat_stream returns the reply as aimock sends it, in
-- chunks of 20 characters
-- case: chat_stream [openai]
SELECT n, quote_literal(chunk) AS chunk
FROM llm.chat_stream('compat stream: tell a story', 'gpt', system => 'You tell short stories.') WITH ORDINALITY s(chunk, n);
SELECT string_agg(chunk, '') AS reply
FROM llm.chat_stream('compat stream: tell a story', 'gpt', system => 'You tell short stories.') chunk;
-- case: chat_stream [anthropic]
SELECT n, quote_literal(chunk) AS chunk
FROM llm.chat_stream('compat stream: tell a story', 'haiku', system => 'You tell short stories.') WITH ORDINALITY s(chunk, n);
SELECT string_agg(chunk, '') AS reply
FROM llm.chat_stream('compat stream: tell a story', 'haiku', system => 'You tell short stories.') chunk;
-- rows reach the client one by one from the select list
-- case: chat_stream in the select list [openai]
SELECT llm.chat_stream('compat plain: say hello', 'gpt');
-- case: chat_stream in the select list [anthropic]
SELECT llm.chat_stream('compat plain: say hello', 'haiku');
-- what the stream request looked like
-- case: chat_stream on the wire [openai]
SELECT count(*) FROM llm.chat_stream('compat stream: tell a story', 'gpt', options => '{"temperature": 0.1}');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT last_request(:'journal') \g (tuples_only=on format=unaligned)
-- case: chat_stream on the wire [anthropic]
SELECT count(*) FROM llm.chat_stream('compat stream: tell a story', 'haiku', options => '{"temperature": 0.1}');
\set journal `curl -sf -H "x-api-key: $AIMOCK_KEY" "$AIMOCK_URL/__aimock/journal"`
SELECT last_request(:'journal') \g (tuples_only=on format=unaligned)
-- stopping early (LIMIT) leaves the session able to stream again
-- case: chat_stream stopped early [openai]
SELECT llm.chat_stream('compat stream: tell a story', 'gpt', 'You tell short stories.') LIMIT 1;
SELECT llm.chat('compat plain: say hello', 'gpt');
-- case: chat_stream stopped early [anthropic]
SELECT llm.chat_stream('compat stream: tell a story', 'haiku', 'You tell short stories.') LIMIT 1;
SELECT llm.chat('compat plain: say hello', 'haiku');
-- an error before the first chunk is the same error as llm.chat's
-- case: chat_stream error before the stream [openai]
SELECT llm.chat_stream('compat error 429: slow down', 'gpt');
-- case: chat_stream error before the stream [anthropic]
SELECT llm.chat_stream('compat error 429: slow down', 'haiku');
-- case: chat_stream wrong API key [openai]
SELECT llm.chat_stream('compat plain: say hello', 'gpt-badkey');
-- case: chat_stream wrong API key [anthropic]
SELECT llm.chat_stream('compat plain: say hello', 'haiku-badkey');
-- aimock drops the connection in the middle of the reply: the rows sent
-- so far (fetched one at a time here), then an error, never a short reply
-- case: chat_stream cut short [openai]
\set FETCH_COUNT 1
SELECT llm.chat_stream('compat stream cut: start talking', 'gpt');
-- case: chat_stream cut short [anthropic]
SELECT llm.chat_stream('compat stream cut: start talking', 'haiku');
\unset FETCH_COUNT
-- one event per character: many small SSE events, multibyte characters
-- case: chat_stream one character per chunk [openai]
SELECT count(*) AS chunks, string_agg(chunk, '') AS reply
FROM llm.chat_stream('compat stream tiny: one character at a time', 'gpt') chunk;
-- case: chat_stream one character per chunk [anthropic]
SELECT count(*) AS chunks, string_agg(chunk, '') AS reply
FROM llm.chat_stream('compat stream tiny: one character at a time', 'haiku') chunk;
-- a streamed reply that is a tool call has no text: pg_llm raises "returned
-- a tool call, not text", as llm.chat does for the same reply
-- case: chat_stream of a tool call [openai]
SELECT count(*) FROM llm.chat_stream('compat stream tool: call a tool', 'gpt',
    options => '{"tools": [{"type": "function", "function": {"name": "get_weather"}}]}');
-- case: chat_stream of a tool call [anthropic]
SELECT count(*) FROM llm.chat_stream('compat stream tool: call a tool', 'haiku',
    options => '{"tools": [{"type": "function", "function": {"name": "get_weather"}}]}');
-- replies that end otherwise than with text, as aimock sends them: each
-- is an error on every path, after the rows already streamed, and its
-- usage row says what happened
-- case: a refusal after part of a reply [anthropic]
SELECT llm.chat('compat refusal: stop half way', 'haiku');
SELECT llm.chat_stream('compat refusal: stop half way', 'haiku');
-- case: a content filter after part of a reply [openai]
SELECT llm.chat('compat filter: stop half way', 'gpt');
SELECT llm.chat_stream('compat filter: stop half way', 'gpt');
-- case: a paused turn [anthropic]
SELECT llm.chat('compat pause: a long turn', 'haiku');
SELECT llm.chat_stream('compat pause: a long turn', 'haiku');
-- aimock's OpenRouter-shaped replies (under /api/v1) carry cached and
-- reasoning tokens: booked in llm.usage, cached input at its own price
-- case: cached and reasoning tokens [openrouter]
SELECT llm.create_provider('openrouter', 'openai', 'http://127.0.0.1:' || :'aimock_port' || '/api/v1',
                           api_key => :'aimock_key');
SELECT llm.add_model('router', 'openrouter', 'openai/gpt-4o-mini', input_usd_per_mtok => 2.5,
                     output_usd_per_mtok => 10, cached_input_usd_per_mtok => 1.25);
SELECT llm.chat('compat cached: a long shared prompt', 'router');
SELECT string_agg(chunk, '') FROM llm.chat_stream('compat cached: a long shared prompt', 'router') chunk;
-- case: usage rows of replies that are not text [both]
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN (SELECT count(*) FROM llm.usage WHERE model = 'router') >= 2
              AND (SELECT count(*) FROM llm.usage WHERE finish_reason IN ('refusal', 'pause_turn', 'content_filter')) >= 6;
        PERFORM pg_sleep(0.1);
    END LOOP;
END;
$$;
SELECT model, mode, outcome, finish_reason, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, cost_usd
FROM llm.usage WHERE model = 'router' OR finish_reason IN ('refusal', 'pause_turn', 'content_filter')
ORDER BY model, finish_reason, mode;
-- aimock speaks the OpenAI Batch API (files, batches, output files; no
-- Anthropic Message Batches): items enqueued with via => 'batch_api' are
-- uploaded as a JSONL file, sent as one batch, polled and written back
-- with aimock's canned batch reply
-- case: queue through the OpenAI Batch API [openai]
CREATE TABLE compat_docs (id int PRIMARY KEY, body text, summary text);
INSERT INTO compat_docs VALUES (1, 'compat batch: first'), (2, 'compat batch: second'), (3, 'compat batch: third');
SELECT count(llm.enqueue(body, 'gpt', target_table => 'compat_docs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM compat_docs;
DO $$
BEGIN
    FOR i IN 1..200 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN ('pending', 'running', 'submitted'));
        PERFORM pg_sleep(0.1);
    END LOOP;
END;
$$;
SELECT id, summary FROM compat_docs ORDER BY id;
SELECT kind, status, provider_status, requests, succeeded, errored FROM llm.batches;
SELECT mode, outcome, count(*), sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
FROM llm.usage WHERE mode = 'batch_api' GROUP BY 1, 2;
