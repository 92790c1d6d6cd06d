-- Answers with a shape: llm.classify, llm.extract, llm.is_true and the
-- json_schema option, asked for with each provider's structured output
-- and validated in the extension; almost-valid answers asked again.
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
SELECT llm.add_model('shape-oa', 'mock', 'shape-oa');
SELECT llm.add_model('shape-an', 'claude', 'shape-an');
-- a relay with neither structured output nor tools: the schema goes in the prompt
SELECT llm.create_provider('plain', 'openai', (SELECT base_url FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock', options => '{"structured_output": "prompt"}');
SELECT llm.add_model('shape-plain', 'plain', 'shape-plain');
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;

-- classify: always one of the labels, whichever way it was asked for
SELECT llm.classify('The app crashes and I want a refund', ARRAY['positive', 'neutral', 'negative'], 'shape-oa') AS openai,
       llm.classify('I love it, works great', ARRAY['positive', 'neutral', 'negative'], 'shape-an') AS anthropic,
       llm.classify('the server is down, urgent', ARRAY['urgent', 'normal'], 'shape-plain',
                    instructions => 'Outages are urgent.') AS prompted;
-- what was sent: OpenAI response_format json_schema (strict, an enum of the
-- labels), Anthropic a forced tool with an input_schema, the relay the
-- schema in its system prompt; never the json_schema option itself
\! python3 test/mock/show_requests.py $MOCK_PORT 3

-- extract: a record valid against the schema
SELECT llm.extract('order_id: A-17, amount: 12.5, product: desk lamp',
                   '{"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^[A-Z]-[0-9]+$"},
                     "amount": {"type": "number", "minimum": 0}, "product": {"type": "string", "maxLength": 40}},
                     "required": ["order_id", "amount", "product"], "additionalProperties": false}',
                   'shape-oa') AS openai,
       llm.extract('order_id: B-2, amount: 3', '{"type": "object", "properties": {"order_id": {"type": "string"},
                     "amount": {"type": "integer"}, "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "maxItems": 3}},
                     "required": ["order_id", "amount"], "$defs": {"line": {"type": "object", "properties": {"sku": {"type": "string"}}}}}',
                   'shape-an', instructions => 'Amounts are whole euros.') AS anthropic;
-- a schema strict mode cannot take (maxLength) is sent with strict false (and
-- Anthropic has no strict mode)
\! python3 test/mock/show_requests.py $MOCK_PORT 2 | python3 -c 'import json,sys; [print(json.loads(l).get("response_format", {}).get("json_schema", {}).get("strict")) for l in sys.stdin]'

-- is_true: a boolean
SELECT llm.is_true('The invoice was paid on the 3rd', 'Was the invoice paid?', 'shape-oa') AS paid,
       llm.is_true('The invoice was not paid', 'Was the invoice paid?', 'shape-an') AS unpaid;

-- the json_schema option of llm.chat and llm.chat_completion: the reply is
-- the validated answer; chat_completion puts it in the content, not in a tool call
SELECT llm.chat('name: Ada, born: 1815', 'shape-an', options => '{"json_schema": {"type": "object",
         "properties": {"name": {"type": "string"}, "born": {"type": "integer"}}, "required": ["name", "born"]}}')::jsonb AS chat;
SELECT r->'choices'->0->'message' AS message, r->'choices'->0->>'finish_reason' AS finish
FROM llm.chat_completion('{"messages": [{"role": "user", "content": "city: Oslo"}],
        "json_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                        "additionalProperties": false}}', 'shape-an') r;
-- a null json_schema is no schema
SELECT llm.chat('hi', 'shape-oa', options => '{"json_schema": null}');


-- almost-valid answers (the mock's shape= directive spoils the first ask of
-- a conversation): validated, asked again with the validation error, valid
SELECT llm.add_model('shape-missing', 'mock', 'shape-oa?shape=missing');
SELECT llm.add_model('shape-label', 'claude', 'shape-an?shape=label');
SELECT llm.add_model('shape-type', 'mock', 'shape-oa?shape=type');
SELECT llm.add_model('shape-extra', 'plain', 'shape-plain?shape=extra');
SELECT llm.add_model('shape-prose-once', 'claude', 'shape-an?shape=prose');
SELECT llm.extract('order_id: C-3, amount: 7', '{"type": "object", "properties": {"order_id": {"type": "string"},
         "amount": {"type": "number"}}, "required": ["order_id", "amount"]}', 'shape-missing') AS missing_then_valid;
\! python3 test/mock/show_requests.py $MOCK_PORT 1 | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["messages"]); print(r["last"])'
SELECT llm.classify('great', ARRAY['positive', 'negative'], 'shape-label') AS label_then_valid;
\! python3 test/mock/show_requests.py $MOCK_PORT 1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["last"])'
SELECT llm.extract('amount: 5', '{"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}',
                   'shape-type') AS type_then_valid;
\! python3 test/mock/show_requests.py $MOCK_PORT 1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["last"])'
SELECT llm.is_true('yes it is', 'Is it?', 'shape-extra') AS extra_then_valid;
\! python3 test/mock/show_requests.py $MOCK_PORT 1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["last"])'
SELECT llm.classify('bad', ARRAY['positive', 'negative'], 'shape-prose-once') AS prose_then_valid;
\! python3 test/mock/show_requests.py $MOCK_PORT 1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["last"])'

-- a provider that answers prose whatever it is asked: asked again, then a
-- clear error naming the provider, the model, the path and the rule
SELECT llm.add_model('shape-prose', 'claude', 'shape-an?shape=prose&shape_times=9');
SELECT llm.classify('anything', ARRAY['a', 'b'], 'shape-prose');
-- with on_error "null": NULL and a WARNING instead
SELECT llm.classify('anything', ARRAY['a', 'b'], 'shape-prose', options => '{"on_error": "null"}') IS NULL AS classify_null,
       llm.extract('x', '{"type": "object"}', 'shape-prose', options => '{"on_error": "null"}') IS NULL AS extract_null;
SELECT llm.add_model('shape-stubborn', 'mock', 'shape-oa?shape=label&shape_times=9');
SET llm.validation_retries = 3;
SELECT llm.classify('anything', ARRAY['a', 'b'], 'shape-stubborn');
-- no retry at all
SET llm.validation_retries = 0;
SELECT llm.extract('order_id: D-4', '{"type": "object", "properties": {"order_id": {"type": "string"}, "n": {"type": "number"}},
         "required": ["order_id", "n"]}', 'shape-missing');
RESET llm.validation_retries;

-- llm.chat_many with json_schema: each answer validated, an invalid one asked
-- again on its own while the others go on; one that stays invalid is its
-- row's error
SELECT ord, content::jsonb, error
FROM llm.chat_many(ARRAY['order_id: E-1, amount: 1', 'order_id: E-2, amount: 2', NULL], 'shape-missing',
                   options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                "amount": {"type": "number"}}, "required": ["order_id", "amount"]}}')
ORDER BY ord;
SELECT ord, content, error
FROM llm.chat_many(ARRAY['a', 'b'], 'shape-stubborn',
                   options => '{"json_schema": {"type": "object", "properties": {"label": {"enum": ["a", "b"]}}, "required": ["label"]}}')
ORDER BY ord;

-- every answer was paid: each one asked again is its own usage row, "invalid"
SELECT wait_until('SELECT count(*) >= 39 FROM llm.usage', 'written');
SELECT model, outcome, count(*) FROM llm.usage WHERE model LIKE 'shape-%' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT DISTINCT error FROM llm.usage WHERE model = 'shape-stubborn';

-- a NULL input gives NULL; bad input is refused; neither sends anything
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;
SELECT llm.classify(NULL, ARRAY['a', 'b'], 'shape-oa') IS NULL AS classify,
       llm.extract(NULL, '{"type": "object"}', 'shape-oa') IS NULL AS extract,
       llm.is_true(NULL, 'q?', 'shape-oa') IS NULL AS is_true;
SELECT llm.classify('x', NULL, 'shape-oa');
SELECT llm.classify('x', ARRAY[]::text[], 'shape-oa');
SELECT llm.classify('x', ARRAY['a', NULL], 'shape-oa');
SELECT llm.classify('x', ARRAY['a', 'b', 'a'], 'shape-oa');
SELECT llm.classify('x', ARRAY['a', ''], 'shape-oa');
SELECT llm.classify('x', ARRAY[['a'], ['b']], 'shape-oa');
SELECT llm.classify(NULL, ARRAY['a', 'a'], 'shape-oa');
SELECT llm.classify('', ARRAY['a', 'b'], 'shape-oa');
SELECT llm.classify('x', ARRAY['a', 'b'], 'shape-oa', options => '{"json_schema": {"type": "object"}}');
SELECT llm.extract('x', NULL, 'shape-oa');
SELECT llm.extract('x', '[1, 2]', 'shape-oa');
SELECT llm.extract('x', '"object"', 'shape-oa');
SELECT llm.extract('x', '{"type": "array", "items": {"type": "string"}}', 'shape-oa');
SELECT llm.extract('x', '{"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}', 'shape-oa');
SELECT llm.extract('x', '{"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}}', 'shape-oa');
SELECT llm.extract('x', '{"type": "object", "properties": {"a": {"type": "text"}}}', 'shape-oa');
SELECT llm.extract('x', '{"type": "object", "properties": {"a": {"type": "string", "pattern": "(unclosed"}}}', 'shape-oa');
SELECT llm.extract('x', '{"type": "object", "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                          "properties": {"x": {"$ref": "#/$defs/a"}}}', 'shape-oa');
SELECT llm.extract('x', '{"type": "object", "properties": {"x": {"$ref": "#/$defs/nowhere"}}}', 'shape-oa');
SELECT llm.extract('x', (SELECT repeat('{"type": "object", "properties": {"a": ', 40) || '{}' || repeat('}}', 40))::jsonb, 'shape-oa');
SELECT llm.extract('x', jsonb_build_object('type', 'object', 'properties',
         (SELECT jsonb_object_agg('p' || i, '{"type": "string"}'::jsonb) FROM generate_series(1, 10001) i)), 'shape-oa');
SELECT llm.is_true('x', NULL, 'shape-oa');
SELECT llm.is_true('x', '', 'shape-oa');
SELECT llm.chat('x', 'shape-oa', options => '{"json_schema": "an object"}');
SELECT llm.chat('x', 'shape-oa', options => '{"json_schema": {"type": "object"}, "response_format": {"type": "json_object"}}');
SELECT llm.chat('x', 'shape-oa', options => '{"json_schema": {"type": "object"}, "n": 2}');
SELECT * FROM llm.chat_stream('x', 'shape-oa', options => '{"json_schema": {"type": "object"}}');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": "x"}], "json_schema": {"type": "object", "minProperties": 1}}', 'shape-oa');
SELECT llm.alter_provider('plain', options => '{"structured_output": "grammar"}');
-- nothing of that was sent
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
SELECT count(*) AS sent FROM llm.usage;
SELECT llm.drop_provider('plain');
