-- pg_llm against @copilotkit/aimock, a third-party OpenAI/Anthropic mock
-- (test/compat/run.sh).  The replies come from the fixtures in fixtures/,
-- matched on the last user message (and on the system prompt, the turn,
-- the tools or the model where a case says so).  Each "-- case:" line
-- starts a case; ids and timestamps are left out of what is selected.
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
-- the same aimock under a key it does not accept
SELECT llm.create_provider('oai-badkey', 'openai', :'openai_url', api_key => 'sk-wrong-key');
SELECT llm.create_provider('claude-badkey', 'anthropic', :'openai_url', api_key => 'sk-wrong-key');
SELECT llm.add_model('gpt-badkey', 'oai-badkey', 'gpt-4o-mini');
SELECT llm.add_model('haiku-badkey', 'claude-badkey', 'claude-3-5-haiku');
SELECT llm.use_provider('oai');

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
\! node "$COMPAT_DIR/journal.js" reset
SELECT llm.chat('compat wire: echo nothing', 'gpt', system => 'be brief',
                options => '{"temperature": 0.3, "max_tokens": 20}');
\! node "$COMPAT_DIR/journal.js" last
-- case: what reaches the wire [anthropic]
\! node "$COMPAT_DIR/journal.js" reset
SELECT llm.chat('compat wire: echo nothing', 'haiku', system => 'be brief',
                options => '{"temperature": 0.3}');
\! node "$COMPAT_DIR/journal.js" last

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
\! node "$COMPAT_DIR/journal.js" last
-- case: tool result round trip [anthropic]
SELECT r->'choices'->0->'message'->>'content' AS content, r->'choices'->0->>'finish_reason' AS finish_reason
FROM llm.chat_completion('{"messages": [
    {"role": "user", "content": "compat tool: weather in Oslo?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_compat_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
    {"role": "tool", "tool_call_id": "call_compat_1", "content": "14 C"}],
  "tools": [{"type": "function", "function": {"name": "get_weather"}}]}', 'haiku') r;
\! node "$COMPAT_DIR/journal.js" last

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
\! node "$COMPAT_DIR/journal.js" reset
SELECT llm.chat('compat error 400: bad request', 'gpt');
\! node "$COMPAT_DIR/journal.js" count
RESET llm.max_retries;
SET llm.max_retries = 0;
-- case: 400 is not retried [anthropic]
SET llm.max_retries = 2;
\! node "$COMPAT_DIR/journal.js" reset
SELECT llm.chat('compat error 400: bad request', 'haiku');
\! node "$COMPAT_DIR/journal.js" count
SET llm.max_retries = 0;
-- a 429 and then a reply: retried after aimock's Retry-After (1 s)
-- case: 429 then success is retried [openai]
SET llm.max_retries = 1;
\! node "$COMPAT_DIR/journal.js" reset
SELECT llm.chat('compat retry openai: once more', 'gpt');
\! node "$COMPAT_DIR/journal.js" count
SET llm.max_retries = 0;
-- case: 429 then success is retried [anthropic]
SET llm.max_retries = 1;
\! node "$COMPAT_DIR/journal.js" reset
SELECT llm.chat('compat retry anthropic: once more', 'haiku');
\! node "$COMPAT_DIR/journal.js" count
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
\set VERBOSITY default

-- a fallback chain across protocols: the OpenAI route answers 503, the
-- Anthropic route serves
-- case: fallback from openai to anthropic
SELECT llm.add_model('fallback', 'oai', 'gpt-down', priority => 1);
SELECT llm.add_model('fallback', 'claude', 'claude-up', priority => 2);
\! node "$COMPAT_DIR/journal.js" reset
SELECT r->>'provider' AS provider, r->>'model' AS model, r->'choices'->0->'message'->>'content' AS content
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "compat fallback: who serves me?"}]}', 'fallback') r;
\! node "$COMPAT_DIR/journal.js" count

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
\! node "$COMPAT_DIR/journal.js" reset
SELECT count(*) FROM llm.chat_stream('compat stream: tell a story', 'gpt', options => '{"temperature": 0.1}');
\! node "$COMPAT_DIR/journal.js" last
-- case: chat_stream on the wire [anthropic]
\! node "$COMPAT_DIR/journal.js" reset
SELECT count(*) FROM llm.chat_stream('compat stream: tell a story', 'haiku', options => '{"temperature": 0.1}');
\! node "$COMPAT_DIR/journal.js" last
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
-- a streamed reply that is a tool call has no text to return
-- case: chat_stream of a tool call [openai]
SELECT count(*) FROM llm.chat_stream('compat stream tool: call a tool', 'gpt',
    options => '{"tools": [{"type": "function", "function": {"name": "get_weather"}}]}');
-- case: chat_stream of a tool call [anthropic]
SELECT count(*) FROM llm.chat_stream('compat stream tool: call a tool', 'haiku',
    options => '{"tools": [{"type": "function", "function": {"name": "get_weather"}}]}');
