-- llm.chat_many: many calls from one statement, run concurrently; one row
-- per prompt, as each completes.
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
SELECT ord, content, error
FROM llm.chat_many(ARRAY['one', 'two', 'three'], 'mock') ORDER BY ord;
-- a NULL or empty prompt, and a prompt that fails for good, give error
-- rows; the others are answered
SELECT ord, content, error
FROM llm.chat_many(ARRAY['fine', NULL, '', 'refused please', 'also fine'],
                   'mock?fail=400&when=refused') ORDER BY ord;
-- retried prompts (a 500, then a 2xx body that is not JSON) succeed
SET llm.max_retries = 2;
SELECT ord, content, error
FROM llm.chat_many(ARRAY['flaky a', 'flaky b'], 'mock?fail=500&times=1') ORDER BY ord;
SELECT ord, content, error
FROM llm.chat_many(ARRAY['garbled a', 'garbled b'], 'mock?fault=malformed&times=1') ORDER BY ord;
RESET llm.max_retries;
-- the system prompt and options go with every prompt
SELECT ord, content FROM llm.chat_many(ARRAY['a b c d e f'], 'mock', system => 'Be brief.',
                                       options => '{"max_tokens": 3}');
-- the fallback chain serves what the first route cannot
SELECT llm.add_model('many-fallback', 'mock', 'mock?fail=503&when=second', priority => 1);
SELECT llm.add_model('many-fallback', 'relay', 'relay-model', priority => 2);
SELECT ord, content, error FROM llm.chat_many(ARRAY['first', 'second'], 'many-fallback') ORDER BY ord;
SELECT llm.drop_model('many-fallback');
-- ten thousand prompts, 50 at a time
SELECT count(*) AS rows, count(*) FILTER (WHERE content = 'echo: p' || ord) AS right,
       count(DISTINCT ord) AS distinct_ords
FROM llm.chat_many(ARRAY(SELECT 'p' || g FROM generate_series(1, 10000) g), 'mock');
-- an empty array gives no rows
SELECT count(*) FROM llm.chat_many('{}', 'mock');
-- in the select list, rows come as they complete: the quick one first
SELECT (r).ord, (r).content
FROM (SELECT llm.chat_many(ARRAY['slow', 'quick'], 'mock?fault=slow_body&chunk_delay=2&when=slow') AS r) s;
-- the enrichment pattern: an UPDATE keyed by ord
CREATE TABLE many_reviews (id int PRIMARY KEY, body text, sentiment text);
INSERT INTO many_reviews VALUES (1, 'love it, great'), (2, 'broken and slow'), (3, 'it is a chair');
WITH batch AS (SELECT array_agg(id ORDER BY id) AS ids,
                      array_agg('Sentiment of: ' || body ORDER BY id) AS prompts
               FROM many_reviews WHERE sentiment IS NULL)
UPDATE many_reviews r SET sentiment = m.content
FROM batch, llm.chat_many(batch.prompts, 'mock') m
WHERE r.id = batch.ids[m.ord] AND m.error IS NULL;
SELECT * FROM many_reviews ORDER BY id;
DROP TABLE many_reviews;
-- what fails the statement: bad arguments, and a timeout
SELECT * FROM llm.chat_many(NULL, 'mock');
SELECT * FROM llm.chat_many(ARRAY[['a', 'b'], ['c', 'd']], 'mock');
SELECT * FROM llm.chat_many(ARRAY['x'], 'mock', options => '{"temperature": 7}');
SELECT * FROM llm.chat_many(ARRAY['x']);
SET llm.many_concurrency = 0;
SET statement_timeout = '300ms';
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'slow ' || g FROM generate_series(1, 20) g), 'mock?latency=5000');
RESET statement_timeout;
