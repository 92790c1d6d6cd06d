-- Embeddings: llm.embed (one vector) and llm.embed_many (many inputs
-- packed into each request, requests concurrent), against the mock's
-- /v1/embeddings; every bad input a clear error of its own; usage per
-- request with its inputs, priced at the input price.  The pgvector
-- columns, the HNSW index and the queue are in embed_vector.sql.
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
SELECT substring(base_url from ':([0-9]+)/') AS mock_port FROM llm.provider WHERE name = 'mock' \gset
\setenv MOCK_PORT :mock_port
-- an embedding model: a price for input tokens is all it needs
SELECT llm.add_model('emb', 'mock', 'text-embedding-3-small', input_usd_per_mtok => 20);

-- one vector; the dimensions asked for are the dimensions returned
SELECT array_length(llm.embed('the cat sat on the mat', 'emb'), 1) AS default_dims;
SELECT llm.embed('the cat sat on the mat', 'emb', '{"dimensions": 4}');
SELECT array_length(llm.embed('hello', 'emb', '{"dimensions": 256}'), 1) AS dims;
-- the same text gives the same vector, of length 1
SELECT llm.embed('same text', 'emb', '{"dimensions": 16}') = llm.embed('same text', 'emb', '{"dimensions": 16}') AS same,
       round(sqrt((SELECT sum(x * x) FROM unnest(llm.embed('same text', 'emb', '{"dimensions": 16}')) x))::numeric, 4) AS norm;
-- what went over the wire: an array of inputs, the dimensions, the user,
-- the upstream model and float vectors
SELECT llm.embed('wire check', 'emb', '{"dimensions": 3, "user": "analyst-7"}') IS NOT NULL AS embedded;
\! curl -s http://127.0.0.1:$MOCK_PORT/_requests | python3 -c 'import json,sys; r=json.load(sys.stdin)[-1]; print(r["path"], json.dumps(r["body"], sort_keys=True))'

-- NULL gives NULL; an empty input, bad options and models without
-- embeddings are refused before anything is sent
SELECT llm.embed(NULL, 'emb') IS NULL AS null_gives_null;
SELECT llm.embed('', 'emb');
SELECT llm.embed('x', 'emb', '{"dimensions": 0}');
SELECT llm.embed('x', 'emb', '{"dimensions": "256"}');
SELECT llm.embed('x', 'emb', '{"encoding_format": "base64"}');
SELECT llm.embed('x', 'emb', '{"input": ["y"]}');
SELECT llm.embed('x', 'emb', '{"user": 7}');
SELECT llm.embed('x', 'emb', '[1, 2]');
-- a key one typo from a known one is refused; a provider's own keys go in
-- extra_body, but not the input
SELECT llm.embed('x', 'emb', '{"dimension": 3}');
SELECT array_length(llm.embed('x', 'emb', '{"dimensions": 3, "extra_body": {"normalize": true}}'), 1) AS extra_body_dims;
SELECT llm.embed('x', 'emb', '{"extra_body": {"input": "y"}}');
-- on_error "null": a failed call is a WARNING and NULL
SELECT llm.embed('x', 'mock?fail=401', '{"on_error": "null"}') IS NULL AS null_on_error;
SELECT llm.embed('', 'emb', '{"on_error": "null"}') IS NULL AS null_on_error;
SELECT llm.embed('x');
SET llm.default_embedding_model = 'emb';
SELECT array_length(llm.embed('x', options => '{"dimensions": 5}'), 1) AS default_model_dims;
RESET llm.default_embedding_model;
-- Anthropic has no embeddings: a model routed only there is refused...
SELECT llm.add_model('claude-emb', 'claude', 'claude-x');
SELECT llm.embed('x', 'claude-emb');
SELECT * FROM llm.embed_many(ARRAY['x'], 'claude-emb');
-- ...and in a chain, its route is passed over
SELECT llm.add_model('mixed-emb', 'claude', 'claude-x', priority => 1);
SELECT llm.add_model('mixed-emb', 'mock', 'text-embedding-3-small', priority => 2);
SELECT array_length(llm.embed('x', 'mixed-emb', '{"dimensions": 3}'), 1) AS served_by_mock;
SELECT llm.drop_model('claude-emb');
SELECT llm.drop_model('mixed-emb');

-- what the provider answers wrong is a clear error, nothing written wrong
SELECT llm.embed('x', 'mock?fault=non_numeric', '{"dimensions": 3}');
SELECT llm.embed('x', 'mock?fault=wrong_dims', '{"dimensions": 3}');
SELECT llm.embed('x', 'mock?fault=fewer_vectors', '{"dimensions": 3}');
SELECT llm.embed('x', 'mock?max_input_tokens=0', '{"dimensions": 3}');
SELECT llm.embed('x', 'mock?fail=401');
-- a retryable failure is retried; an unreadable 2xx too
SET llm.max_retries = 2;
SELECT array_length(llm.embed('flaky', 'mock?fail=503&times=1', '{"dimensions": 3}'), 1) AS retried;
SELECT array_length(llm.embed('garbled', 'mock?fault=malformed&times=1', '{"dimensions": 3}'), 1) AS retried;
RESET llm.max_retries;

-- embed_many: one row per input; NULL and empty inputs are not sent
SELECT ord, embedding, error
FROM llm.embed_many(ARRAY['the cat', NULL, '', 'sat on the mat'], 'emb', '{"dimensions": 3}') ORDER BY ord;
-- each vector is the one llm.embed gives for its input
SELECT bool_and(m.embedding = llm.embed(t.body, 'emb', '{"dimensions": 8}')) AS same_as_embed, count(*)
FROM unnest(ARRAY['alpha beta', 'gamma', 'delta epsilon zeta']) WITH ORDINALITY AS t(body, ord)
JOIN llm.embed_many(ARRAY['alpha beta', 'gamma', 'delta epsilon zeta'], 'emb', '{"dimensions": 8}') m
  ON m.ord = t.ord;
-- 250 inputs in requests of up to 100 inputs: three requests
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT count(*) AS rows, count(DISTINCT ord) AS ords, count(*) FILTER (WHERE array_length(embedding, 1) = 4) AS vectors
FROM llm.embed_many(ARRAY(SELECT 'text ' || g FROM generate_series(1, 250) g), 'emb', '{"dimensions": 4}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["embeddings"]; print("requests", s["requests"], "inputs", s["inputs"])'
-- llm.embed_inputs_per_request, and the token estimate, make smaller requests
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SET llm.embed_inputs_per_request = 7;
SELECT count(*) FROM llm.embed_many(ARRAY(SELECT 'text ' || g FROM generate_series(1, 50) g), 'emb', '{"dimensions": 2}');
RESET llm.embed_inputs_per_request;
SET llm.embed_tokens_per_request = 100;
SELECT count(*) FROM llm.embed_many(ARRAY(SELECT repeat('word ', 50) || g FROM generate_series(1, 10) g), 'emb', '{"dimensions": 2}');
RESET llm.embed_tokens_per_request;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["embeddings"]; print("requests", s["requests"], "inputs", s["inputs"])'
-- an input over the model's limit: the provider refuses the whole
-- request; it is split in half until the input at fault fails alone, and
-- the others are embedded
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT ord, array_length(embedding, 1) AS dims, error
FROM llm.embed_many(ARRAY['one', 'two', 'three', 'four five six seven', 'eight', 'nine'],
                    'mock?max_input_tokens=3', '{"dimensions": 2}') ORDER BY ord;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["embeddings"]; print("requests", s["requests"], "inputs embedded", s["inputs"])'
-- a refusal of the request itself (an option the model does not take):
-- one input of a request of 8 or more is sent alone; refused with the
-- same words, every input fails with them after two requests
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT count(*) AS inputs, count(DISTINCT error) AS errors, min(error) AS error
FROM llm.embed_many(ARRAY(SELECT 'input ' || g FROM generate_series(1, 10) g),
                    'mock?fail=400&message=This+model+does+not+support+specifying+dimensions.', '{"dimensions": 2}');
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["embeddings"]; print("requests", s["requests"])'
-- and with one input over the limit among 10, the probe is embedded and
-- the others are split down to the one at fault
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT ord, array_length(embedding, 1) AS dims, error
FROM llm.embed_many(ARRAY(SELECT CASE WHEN g = 7 THEN 'this one is far too long' ELSE 'input ' || g END
                          FROM generate_series(1, 10) g),
                    'mock?max_input_tokens=3', '{"dimensions": 2}') ORDER BY ord;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["embeddings"]; print("requests", s["requests"], "inputs embedded", s["inputs"])'
-- fewer vectors than inputs, out of order (matched by index), a
-- non-numeric element, a vector of other dimensions: the input at fault
-- fails alone, the others keep their vectors
SELECT ord, array_length(embedding, 1) AS dims, error
FROM llm.embed_many(ARRAY['a', 'b', 'c'], 'mock?fault=fewer_vectors&when=b', '{"dimensions": 2}') ORDER BY ord;
SELECT bool_and(m.embedding = llm.embed(t.body, 'mock', '{"dimensions": 5}')) AS matched_by_index, count(*)
FROM unnest(ARRAY['first', 'second', 'third']) WITH ORDINALITY AS t(body, ord)
JOIN llm.embed_many(ARRAY['first', 'second', 'third'], 'mock?fault=shuffled', '{"dimensions": 5}') m
  ON m.ord = t.ord;
SELECT ord, array_length(embedding, 1) AS dims, error
FROM llm.embed_many(ARRAY['a', 'b', 'c'], 'mock?fault=non_numeric&when=a', '{"dimensions": 2}') ORDER BY ord;
SELECT ord, array_length(embedding, 1) AS dims, error
FROM llm.embed_many(ARRAY['a', 'b', 'c'], 'mock?fault=wrong_dims&when=c', '{"dimensions": 2}') ORDER BY ord;
-- a request that fails for good fails its inputs
SELECT ord, embedding, error FROM llm.embed_many(ARRAY['a', 'b'], 'mock?fail=401') ORDER BY ord;
-- what fails the statement: bad arguments, a model without embeddings
SELECT * FROM llm.embed_many(NULL, 'emb');
SELECT * FROM llm.embed_many(ARRAY[['a', 'b'], ['c', 'd']], 'emb');
SELECT * FROM llm.embed_many(ARRAY['a'], 'emb', '{"dimensions": -1}');
SELECT count(*) FROM llm.embed_many('{}', 'emb');
SET statement_timeout = '300ms';
SELECT count(*) FROM llm.embed_many(ARRAY['slow'], 'mock?latency=5000');
RESET statement_timeout;

-- usage: one row per request, with its inputs and input tokens, priced at
-- the input price; task embed; the inventory and the cost report count them
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
DELETE FROM llm.usage;
SELECT llm.embed('one two three', 'emb', '{"dimensions": 2}') IS NOT NULL AS embedded;
SELECT count(*) FROM llm.embed_many(ARRAY['four five', 'six', 'seven eight nine ten'], 'emb', '{"dimensions": 2}');
SELECT wait_until('SELECT count(*) >= 2 FROM llm.usage', 'written');
SELECT mode, task, outcome, provider, model, upstream_model, http_status, inputs,
       input_tokens, output_tokens, cost_usd
FROM llm.usage ORDER BY mode;
SELECT mode, task, provider, model, calls, input_tokens, output_tokens, embedded_inputs, cost_usd
FROM llm.usage_summary;
SELECT model, calls, input_tokens, output_tokens, paid_usd, baseline_provider, baseline_usd
FROM llm.cost_report() WHERE model = 'emb';

-- the queue: llm.enqueue_embedding, and the worker packs the items of a
-- role, model and options into requests of many inputs, writing each
-- vector through its column type's input function (pgvector's columns in
-- embed_vector.sql)
CREATE TABLE eq_docs (id int PRIMARY KEY, body text, v4 real[], v8 float8[], vt text, vj jsonb, n int);
INSERT INTO eq_docs SELECT g, 'queued document ' || g FROM generate_series(1, 30) g;
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
DELETE FROM llm.usage;
SELECT count(llm.enqueue_embedding(body, 'emb', 'eq_docs', c, jsonb_build_object('id', id), '{"dimensions": 4}'))
FROM eq_docs, unnest(ARRAY['v4', 'v8', 'vt', 'vj']) AS c;
SELECT wait_queue();
SELECT count(*) AS rows, bool_and(v4 = llm.embed(body, 'emb', '{"dimensions": 4}')) AS real_array_right,
       bool_and(v8::real[] = v4) AS float8_array_right,
       bool_and(vt = '[' || array_to_string(v4, ',') || ']') AS text_right,
       bool_and(jsonb_array_length(vj) = 4) AS jsonb_right
FROM eq_docs;
-- 120 items in 2 requests of up to 100 inputs (the llm.embed checks above are
-- requests of their own)
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["embeddings"]; print("requests", s["requests"] - 30, "inputs", s["inputs"] - 30)'
SELECT wait_until('SELECT count(*) >= 2 FROM llm.usage WHERE mode = ''queue''', 'written');
SELECT mode, task, outcome, inputs, input_tokens, cost_usd FROM llm.usage WHERE mode = 'queue' ORDER BY inputs DESC;
-- the same input for the same target, still waiting, is not queued twice
BEGIN;
SELECT llm.enqueue_embedding('twice', 'emb', 'eq_docs', 'v4', '{"id": 1}', '{"dimensions": 4}') AS first \gset
SELECT llm.enqueue_embedding('twice', 'emb', 'eq_docs', 'v4', '{"id": 1}', '{"dimensions": 4}') = :first AS same_item;
ROLLBACK;
-- an input over the model's limit: its request is split down to it, it
-- fails alone; fewer vectors than inputs: the one without fails alone
UPDATE eq_docs SET v4 = NULL;
SELECT count(llm.enqueue_embedding(CASE WHEN id = 3 THEN 'this one is far too long' ELSE 'short ' || id END,
                                   'mock?max_input_tokens=3', 'eq_docs', 'v4', jsonb_build_object('id', id),
                                   '{"dimensions": 4}'))
FROM eq_docs WHERE id <= 8;
SELECT count(llm.enqueue_embedding('other ' || id, 'mock?fault=fewer_vectors&when=other+12', 'eq_docs', 'v4',
                                   jsonb_build_object('id', id), '{"dimensions": 4}'))
FROM eq_docs WHERE id BETWEEN 10 AND 14;
SELECT wait_queue();
SELECT target_key, status, error FROM llm.queue
WHERE target_table = 'eq_docs'::regclass AND status = 'failed' ORDER BY id;
SELECT count(*) FILTER (WHERE v4 IS NOT NULL) AS written, count(*) FILTER (WHERE id IN (3, 12) AND v4 IS NULL) AS left_null
FROM eq_docs WHERE id <= 14 AND id <> 9;
-- a refusal of the request itself: the probe, one item alone, is refused
-- with the same words, and every item fails with them, in a few requests
-- (not one for each item and more)
\! curl -s -X POST http://127.0.0.1:$MOCK_PORT/_reset >/dev/null
SELECT count(llm.enqueue_embedding(body, 'mock?fail=400&message=This+model+does+not+support+specifying+dimensions.',
                                   'eq_docs', 'v4', jsonb_build_object('id', id), '{"dimensions": 4}'))
FROM eq_docs WHERE id BETWEEN 15 AND 26;
SELECT wait_queue();
SELECT status, count(*), min(error) AS error FROM llm.queue
WHERE model LIKE 'mock?fail=400%' GROUP BY 1;
\! curl -s http://127.0.0.1:$MOCK_PORT/_stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["embeddings"]; print("a few requests:", s["requests"] <= 4)'
-- what enqueue_embedding refuses before anything is queued
SELECT llm.enqueue_embedding(NULL, 'emb') IS NULL AS null_gives_null;
SELECT llm.enqueue_embedding('', 'emb');
SELECT llm.enqueue_embedding('x', 'emb', 'eq_docs', 'n', '{"id": 1}');
SELECT llm.enqueue_embedding('x', 'emb', 'eq_docs', 'v4', NULL);
SELECT llm.enqueue_embedding('x', 'emb', 'eq_docs', 'v4', '{"id": 999}');
SELECT llm.enqueue_embedding('x', 'emb', 'eq_docs', 'v4', '{"id": 1}', '{"dimension": 4}');
SELECT llm.create_provider('e-nobatch', 'openai', (SELECT base_url FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock', options => '{"batch_api": "none"}');
SELECT llm.add_model('emb-nobatch', 'e-nobatch', 'text-embedding-3-small');
SELECT llm.enqueue_embedding('x', 'emb-nobatch', via => 'batch_api');
SELECT llm.drop_provider('e-nobatch');
SELECT llm.enqueue_embedding('x', 'emb', via => 'carrier pigeon');
SELECT llm.add_model('claude-emb', 'claude', 'claude-x');
SELECT llm.enqueue_embedding('x', 'claude-emb');
SELECT llm.drop_model('claude-emb');
SELECT llm.enqueue_embedding('x');
DROP TABLE eq_docs;
SELECT llm.drop_model('emb');
