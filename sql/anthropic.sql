-- The Anthropic protocol: the same calls, translated both ways.
SELECT llm.add_model('haiku', 'claude', 'claude-haiku');
SELECT llm.chat('hello there', 'haiku');

-- what is sent: system prompt at the top level, max_tokens always present,
-- stop as stop_sequences, seed dropped, x-api-key and anthropic-version
SELECT llm.add_model('claude-echo', 'claude', 'claude?echo=request');
SELECT llm.chat('x', 'claude-echo', system => 'be brief',
                options => '{"temperature": 0.5, "stop": "END", "seed": 3, "top_p": 0.9}')::jsonb AS sent;
SELECT llm.chat('x', 'claude-echo', options => '{"max_tokens": 77}')::jsonb->'max_tokens' AS max_tokens;
SET llm.anthropic_max_tokens = 1234;
SELECT llm.chat('x', 'claude-echo')::jsonb->'max_tokens' AS default_max_tokens;
RESET llm.anthropic_max_tokens;
-- the mock's port, for the checks of what it received
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
\! curl -s http://127.0.0.1:$MOCK_PORT/_requests | python3 -c 'import json,sys; r=json.load(sys.stdin)[-1]; h=r["headers"]; print(r["path"], h.get("x-api-key"), h.get("anthropic-version"), "authorization" in h)'

-- a conversation with a tool round trip, translated to Anthropic blocks
SELECT llm.chat_completion('{"messages": [
   {"role": "system", "content": "sys"},
   {"role": "user", "content": "weather?"},
   {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
   {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
   {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "text", "text": "tomorrow?"}]}],
  "tools": [{"type": "function", "function": {"name": "weather", "description": "w", "parameters": {"type": "object"}}}],
  "tool_choice": "required"}', 'claude-echo')->'choices'->0->'message'->>'content' AS sent \gset
SELECT jsonb_pretty(:'sent'::jsonb - 'model');

-- replies come back in the OpenAI shape
SELECT r - 'id' - 'created' AS response
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "two words"}]}', 'haiku') r;
SELECT r->'choices'->0->'message'->'tool_calls' AS tool_calls, r->'choices'->0->>'finish_reason' AS finish
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "please call tool"}],
        "tools": [{"type": "function", "function": {"name": "lookup"}}]}', 'haiku') r;
SELECT r->'choices'->0->'message'->>'content', r->'choices'->0->>'finish_reason'
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "one two three"}], "max_tokens": 1}', 'haiku') r;

-- options the protocol cannot honour are refused before sending
SELECT llm.chat('x', 'haiku', options => '{"temperature": 1.5}');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}], "n": 2}', 'haiku');
SELECT llm.chat('x', 'haiku', options => '{"presence_penalty": 0.5}');

-- errors in Anthropic's shape: 529 overloaded is retried, then reported
SET llm.max_retries = 1;
SELECT llm.add_model('claude-529', 'claude', 'claude?fail=529&retry_after=0.05');
SELECT llm.chat('x', 'claude-529');
SELECT llm.add_model('claude-529-once', 'claude', 'claude?fail=529&times=1&retry_after=0.05');
SELECT llm.chat('recovered', 'claude-529-once');
SELECT replace(base_url, '/v1', '/billing/v1') AS billing_url FROM llm.provider WHERE name = 'claude' \gset
SELECT llm.create_provider('claude-billing', 'anthropic', :'billing_url', api_key => 'sk-mock');
SELECT llm.add_model('claude-billing', 'claude-billing', 'claude?fail=429&quota=1');
SELECT llm.chat('x', 'claude-billing');
SELECT llm.drop_provider('claude-billing');
RESET llm.max_retries;

-- a wrong key
SELECT llm.create_provider('claude-badkey', 'anthropic', 'http://127.0.0.1:1/v1', api_key => 'sk-wrong');
SELECT base_url AS anthropic_url FROM llm.provider WHERE name = 'claude' \gset
SELECT llm.alter_provider('claude-badkey', base_url => :'anthropic_url');
SELECT llm.add_model('claude-badkey', 'claude-badkey', 'claude');
SELECT llm.chat('x', 'claude-badkey');
SELECT llm.drop_provider('claude-badkey');
