-- Answers with a shape through the queue and a provider batch API: the
-- worker validates every answer, asks again with the validation error,
-- and writes the answer typed: a label into an enum column, a record into
-- a jsonb column, a yes or no into a boolean.
SELECT llm.add_model('sq-oa', 'mock', 'sq-oa');
SELECT llm.add_model('sq-an', 'claude', 'sq-an');
SELECT llm.add_model('sq-missing', 'mock', 'sq-oa?shape=missing');
SELECT llm.add_model('sq-stubborn', 'claude', 'sq-an?shape=type&shape_times=9');
SELECT llm.create_provider('sq-batch', 'openai', (SELECT base_url FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock', options => '{"batch_api": "inline"}');
-- in a batch, the answers to prompts that say "bad" are a label not in the list
SELECT llm.add_model('sq-batch', 'sq-batch', 'sq-batch?shape=label&when=bad');

CREATE TYPE sq_mood AS ENUM ('positive', 'neutral', 'negative');
CREATE TABLE sq_tickets (id int PRIMARY KEY, body text NOT NULL, mood sq_mood, record jsonb,
                         refund boolean, amount numeric);
INSERT INTO sq_tickets VALUES
    (1, 'order_id: A-1, amount: 12.5. The app crashes, I want a refund'),
    (2, 'order_id: A-2, amount: 3. Works great, love it'),
    (3, 'order_id: A-3, amount: 7. How do I export? Not asking for money back, no refund');

-- a schema is checked when the item is queued, before anything is sent
SELECT llm.enqueue('x', 'sq-oa', options => '{"json_schema": {"type": "object", "properties": {"a": {"format": "date"}}}}');
-- an answer spread over columns (a json_schema and no target_column): each
-- property must name a column the caller may update
CREATE TABLE sq_orders (id int PRIMARY KEY, mail text NOT NULL, order_id text, amount numeric(10, 2),
                        lines jsonb, urgent boolean);
INSERT INTO sq_orders VALUES (1, 'order_id: B-7, amount: 19.99 please hurry'), (2, 'order_id: B-8, amount: 5, no rush');
SELECT llm.enqueue('x', 'sq-oa', target_table => 'sq_orders', target_key => '{"id": 1}',
                   options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                "total": {"type": "number"}}}}');
SELECT llm.enqueue('x', 'sq-oa', target_table => 'sq_orders', target_key => '{"id": 1}',
                   options => '{"json_schema": {"type": "object"}}');
SELECT llm.enqueue('x', 'sq-oa', target_table => 'sq_orders', target_key => '{"id": 1}');
-- a role may spread an answer only over columns it may update itself
CREATE ROLE regress_llm_sq_tenant;
GRANT USAGE ON SCHEMA llm TO regress_llm_sq_tenant;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO regress_llm_sq_tenant;
GRANT SELECT (id, order_id), UPDATE (order_id) ON sq_orders TO regress_llm_sq_tenant;
SET ROLE regress_llm_sq_tenant;
SELECT llm.enqueue('x', 'sq-oa', target_table => 'sq_orders', target_key => '{"id": 1}',
                   options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                "amount": {"type": "number"}}}}');
-- (queued in a transaction rolled back: an item committed here would be
-- sent at once, and its usage row could land after the TRUNCATE below)
BEGIN;
SELECT llm.enqueue('x', 'sq-oa', target_table => 'sq_orders', target_key => '{"id": 1}',
                   options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}') > 0 AS queued;
ROLLBACK;
RESET ROLE;
DELETE FROM llm.queue;
REVOKE ALL ON sq_orders FROM regress_llm_sq_tenant;
REVOKE ALL ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) FROM regress_llm_sq_tenant;
REVOKE ALL ON SCHEMA llm FROM regress_llm_sq_tenant;
DROP ROLE regress_llm_sq_tenant;

DELETE FROM llm.queue;
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;

-- a label into an enum column (OpenAI structured output), a record into a
-- jsonb column (Anthropic, a forced tool), a yes or no into a boolean, an
-- amount into a numeric (a first answer without it asked again)
SELECT count(llm.enqueue(body, 'sq-oa', target_table => 'sq_tickets', target_column => 'mood',
                         target_key => jsonb_build_object('id', id),
                         options => '{"json_schema": {"type": "object", "properties": {"label": {"type": "string",
                                      "enum": ["positive", "neutral", "negative"]}}, "required": ["label"],
                                      "additionalProperties": false}}')),
       count(llm.enqueue(body, 'sq-an', target_table => 'sq_tickets', target_column => 'record',
                         target_key => jsonb_build_object('id', id),
                         options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                      "amount": {"type": "number"}}, "required": ["order_id", "amount"]}}')),
       count(llm.enqueue(body, 'sq-oa', target_table => 'sq_tickets', target_column => 'refund',
                         target_key => jsonb_build_object('id', id),
                         options => '{"json_schema": {"type": "object", "properties": {"answer": {"type": "boolean"}},
                                      "required": ["answer"]}}')),
       count(llm.enqueue(body, 'sq-missing', target_table => 'sq_tickets', target_column => 'amount',
                         target_key => jsonb_build_object('id', id),
                         options => '{"json_schema": {"type": "object", "properties": {"amount": {"type": "number"}},
                                      "required": ["amount"]}}'))
FROM sq_tickets;
-- a record spread over the columns of its names (Anthropic, a forced tool)
SELECT count(llm.enqueue(mail, 'sq-an', target_table => 'sq_orders', target_key => jsonb_build_object('id', id),
                         options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                      "amount": {"type": "number"}, "lines": {"type": "array", "items": {"type": "string"}},
                                      "urgent": {"type": ["boolean", "null"]}},
                                      "required": ["order_id", "amount", "lines", "urgent"]}}'))
FROM sq_orders;
-- and one whose answers keep breaking the schema: it fails, saying where and why
SELECT llm.enqueue('order_id: Z-9, amount: 1', 'sq-stubborn', target_table => 'sq_tickets', target_column => 'record',
                   target_key => '{"id": 1}',
                   options => '{"json_schema": {"type": "object", "properties": {"amount": {"type": "number"}},
                                "required": ["amount"]}}') AS stubborn_id \gset
SELECT wait_queue();
SELECT id, mood, record, refund, amount FROM sq_tickets ORDER BY id;
SELECT id, order_id, amount, lines, urgent FROM sq_orders ORDER BY id;
SELECT model, status, invalid_answers, count(*) FROM llm.queue GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT status, invalid_answers, error FROM llm.queue WHERE id = :stubborn_id;
SELECT wait_until('SELECT count(*) >= 19 FROM llm.usage', 'written');
SELECT model, outcome, count(*) FROM llm.usage GROUP BY 1, 2 ORDER BY 1, 2;

-- a job with a schema: a label into an enum column for every row
CREATE TABLE sq_notes (id int PRIMARY KEY, body text NOT NULL, mood sq_mood);
INSERT INTO sq_notes VALUES (1, 'love it'), (2, 'crashes all the time'), (3, 'it arrived');
SELECT llm.create_job('sq-job', 'sq_notes', '{id}', 'Review: {body}', 'mood', model => 'sq-oa',
                      options => '{"json_schema": {"type": "object", "properties": {"label": {"type": "string",
                                   "enum": ["positive", "neutral", "negative"]}}, "required": ["label"],
                                   "additionalProperties": false}}');
SELECT llm.run_job('sq-job');
SELECT wait_queue();
SELECT id, mood FROM sq_notes ORDER BY id;
SELECT llm.drop_job('sq-job');
DROP TABLE sq_notes;

-- a job with a json_schema and no result column: each answer spread over
-- the columns named by the schema's properties, as llm.enqueue spreads
-- one; every property is checked when the job is created (a column the
-- owner may update, neither a key nor an input column); run_job picks the
-- rows whose spread columns are all NULL, a changed input resets them all,
-- and job_status counts the items
\set SHOW_CONTEXT never
CREATE TABLE sq_mail (id int PRIMARY KEY, body text NOT NULL, order_id text, amount numeric(10, 2), note text);
INSERT INTO sq_mail VALUES (1, 'order_id: C-1, amount: 10', NULL, NULL, NULL),
                           (2, 'order_id: C-2, amount: 20.5', NULL, NULL, NULL),
                           (3, 'order_id: C-3, amount: 3', 'C-3', NULL, NULL);
SELECT llm.create_job('sq-spread', 'sq_mail', '{id}', 'Mail: {body}', model => 'sq-oa',
                      options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                   "total": {"type": "number"}}}}');
SELECT llm.create_job('sq-spread', 'sq_mail', '{id}', 'Mail: {body}', model => 'sq-oa',
                      options => '{"json_schema": {"type": "object", "properties": {"body": {"type": "string"}}}}');
SELECT llm.create_job('sq-spread', 'sq_mail', '{id}', 'Mail: {body}', model => 'sq-oa',
                      options => '{"json_schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}');
SELECT llm.create_job('sq-spread', 'sq_mail', '{id}', 'Mail: {body}', model => 'sq-oa',
                      options => '{"json_schema": {"type": "object"}}');
CREATE ROLE regress_llm_sq_jobber;
GRANT USAGE ON SCHEMA llm TO regress_llm_sq_jobber;
GRANT EXECUTE ON FUNCTION llm.create_job TO regress_llm_sq_jobber;
GRANT SELECT (id, body, order_id, amount), UPDATE (order_id) ON sq_mail TO regress_llm_sq_jobber;
SET ROLE regress_llm_sq_jobber;
SELECT llm.create_job('sq-spread', 'sq_mail', '{id}', 'Mail: {body}', model => 'sq-oa', track_changes => false,
                      options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                   "amount": {"type": "number"}}}}');
RESET ROLE;
REVOKE ALL ON sq_mail FROM regress_llm_sq_jobber;
REVOKE ALL ON FUNCTION llm.create_job FROM regress_llm_sq_jobber;
REVOKE ALL ON SCHEMA llm FROM regress_llm_sq_jobber;
DROP ROLE regress_llm_sq_jobber;
SELECT count(*) AS jobs_made FROM llm.job WHERE name = 'sq-spread';
SELECT llm.create_job('sq-spread', 'sq_mail', '{id}', 'Mail: {body}', model => 'sq-oa',
                      options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                   "amount": {"type": "number"}}, "required": ["order_id", "amount"],
                                   "additionalProperties": false}}');
SELECT result_table, result_column, spread_columns FROM llm.job WHERE name = 'sq-spread';
SELECT requests FROM llm.estimate_job('sq-spread') LIMIT 1;
SELECT llm.run_job('sq-spread');
SELECT wait_queue();
SELECT id, order_id, amount FROM sq_mail ORDER BY id;
SELECT llm.run_job('sq-spread');
-- a changed input: every spread column back to NULL, the row queued again
BEGIN;
UPDATE sq_mail SET body = 'order_id: C-9, amount: 99' WHERE id = 1;
SELECT id, order_id, amount FROM sq_mail WHERE id = 1;
COMMIT;
SELECT wait_queue();
-- an inserted row, queued by the trigger
INSERT INTO sq_mail (id, body) VALUES (4, 'order_id: C-4, amount: 4');
SELECT wait_queue();
SELECT id, order_id, amount FROM sq_mail ORDER BY id;
SELECT job, result, pending, running, done, failed, percent_done FROM llm.job_status WHERE job = 'sq-spread';
SELECT target_column, spread, count(*) FROM llm.queue q JOIN llm.job j ON j.id = q.job_id
WHERE j.name = 'sq-spread' GROUP BY 1, 2;
SELECT llm.drop_job('sq-spread');
-- into a result table of its own, through a provider batch: its key rows
-- added, the columns reset when the input changes
CREATE TABLE sq_mail_facts (id int PRIMARY KEY, order_id text, amount numeric(10, 2), seen timestamptz DEFAULT now());
SELECT llm.create_job('sq-spread-t', 'sq_mail', '{id}', 'Mail: {body}', result_table => 'sq_mail_facts',
                      model => 'sq-batch', via => 'batch_api',
                      options => '{"json_schema": {"type": "object", "properties": {"order_id": {"type": "string"},
                                   "amount": {"type": "number"}}, "required": ["order_id", "amount"]}}');
SELECT llm.run_job('sq-spread-t');
SELECT wait_queue();
SELECT id, order_id, amount FROM sq_mail_facts ORDER BY id;
BEGIN;
UPDATE sq_mail SET body = 'order_id: C-8, amount: 8' WHERE id = 2;
SELECT id, order_id, amount FROM sq_mail_facts WHERE id = 2;
COMMIT;
SELECT wait_queue();
SELECT id, order_id, amount FROM sq_mail_facts ORDER BY id;
SELECT job, result, done, failed FROM llm.job_status WHERE job = 'sq-spread-t';
SELECT llm.drop_job('sq-spread-t');
DROP TABLE sq_mail, sq_mail_facts;
\set SHOW_CONTEXT errors

-- through a provider batch: every answer validated; an invalid one is sent
-- again realtime with the validation error, and every row ends valid
CREATE TABLE sq_reviews (id int PRIMARY KEY, body text NOT NULL, mood sq_mood);
INSERT INTO sq_reviews SELECT g, CASE WHEN g % 20 = 0 THEN 'bad: ' ELSE '' END ||
    (ARRAY['love it', 'crashes all the time', 'it arrived'])[1 + g % 3] || ' #' || g
FROM generate_series(1, 60) g;
DELETE FROM llm.queue;
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
TRUNCATE llm.usage;
SELECT count(llm.enqueue(body, 'sq-batch', target_table => 'sq_reviews', target_column => 'mood',
                         target_key => jsonb_build_object('id', id), via => 'batch_api',
                         options => '{"json_schema": {"type": "object", "properties": {"label": {"type": "string",
                                      "enum": ["positive", "neutral", "negative"]}}, "required": ["label"],
                                      "additionalProperties": false}}'))
FROM sq_reviews;
SELECT wait_queue();
SELECT count(*) AS rows, count(mood) AS with_mood FROM sq_reviews;
SELECT mood, count(*) FROM sq_reviews GROUP BY 1 ORDER BY 1;
SELECT via, status, invalid_answers, count(*) FROM llm.queue GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT wait_until('SELECT count(*) >= 63 FROM llm.usage', 'written');
SELECT mode, outcome, count(*) FROM llm.usage GROUP BY 1, 2 ORDER BY 1, 2;
DELETE FROM llm.queue;
DROP TABLE sq_tickets, sq_reviews, sq_orders;
DROP TYPE sq_mood;
