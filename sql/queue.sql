-- The queue and its worker (the test instance preloads pg_llm and runs a
-- worker for this database).
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;

CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, summary text, n int, j jsonb);
INSERT INTO docs (id, body) SELECT g, 'document ' || g FROM generate_series(1, 30) g;
CREATE TABLE pairs (a int, b int, body text, summary text, PRIMARY KEY (a, b));
INSERT INTO pairs VALUES (1, 1, 'first pair', NULL), (1, 2, 'second pair', NULL);
CREATE VIEW docs_view AS SELECT * FROM docs;

-- targets are checked when the item is enqueued
SELECT llm.enqueue(NULL, 'mock');
SELECT llm.enqueue('', 'mock');
SELECT llm.enqueue('x');
SELECT llm.enqueue('x', 'mock', options => '{"temperature": 9}');
SELECT llm.enqueue('x', 'mock', target_table => 'docs');
SELECT llm.enqueue('x', 'mock', target_table => 'docs', target_column => 'nope', target_key => '{"id": 1}');
SELECT llm.enqueue('x', 'mock', target_table => 'docs', target_column => 'summary', target_key => '{"body": "document 1"}');
SELECT llm.enqueue('x', 'mock', target_table => 'docs', target_column => 'summary', target_key => '{"nope": 1}');
SELECT llm.enqueue('x', 'mock', target_table => 'docs', target_column => 'summary', target_key => '[1]');
SELECT llm.enqueue('x', 'mock', target_table => 'pairs', target_column => 'summary', target_key => '{"a": 1}');
SELECT llm.enqueue('x', 'mock', target_table => 'docs_view', target_column => 'summary', target_key => '{"id": 1}');
SELECT count(*) FROM llm.queue;

-- write-back into a text column, a jsonb column and a two-column key
SELECT count(llm.enqueue('Summarize: ' || body, 'mock', target_table => 'docs',
                         target_column => 'summary', target_key => jsonb_build_object('id', id)))
FROM docs;
SELECT llm.enqueue('x', 'mock?reply=%7B%22ok%22%3Atrue%7D', target_table => 'docs', target_column => 'j',
                   target_key => '{"id": 1}');
SELECT count(llm.enqueue('Summarize: ' || body, 'mock', target_table => 'pairs',
                         target_column => 'summary', target_key => jsonb_build_object('a', a, 'b', b)))
FROM pairs;
-- no target: the reply stays in the queue
SELECT llm.enqueue('kept in the queue', 'mock') AS no_target_id \gset
SELECT wait_queue();
SELECT count(*) FILTER (WHERE summary = 'echo: Summarize: ' || body) AS written, count(*) AS rows FROM docs;
SELECT j FROM docs WHERE id = 1;
SELECT * FROM pairs ORDER BY a, b;
SELECT status, reply, attempts FROM llm.queue WHERE id = :no_target_id;
SELECT status, count(*) FROM llm.queue GROUP BY status ORDER BY status;

-- per-item outcomes: a retried 429, a permanent 400 and good items in one
-- batch; the bad one fails alone
TRUNCATE llm.queue;
UPDATE docs SET summary = NULL;
SELECT llm.enqueue('retried', 'mock?fail=429&times=1&retry_after=0.1', target_table => 'docs',
                   target_column => 'summary', target_key => '{"id": 1}');
SELECT llm.enqueue('refused', 'mock?fail=400', target_table => 'docs',
                   target_column => 'summary', target_key => '{"id": 2}');
SELECT count(llm.enqueue('fine ' || id, 'mock', target_table => 'docs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id)))
FROM docs WHERE id BETWEEN 3 AND 10;
-- an option the route's protocol refuses fails that item alone, before sending
SELECT llm.enqueue('too hot', 'haiku', options => '{"temperature": 1.5}') IS NOT NULL AS queued;
SELECT wait_queue();
SELECT id, summary FROM docs WHERE id <= 4 ORDER BY id;
SELECT prompt, status, attempts, error FROM llm.queue WHERE prompt IN ('retried', 'refused', 'too hot') ORDER BY prompt;
SELECT status, count(*) FROM llm.queue GROUP BY status ORDER BY status;

-- a target row that vanished before the worker got to it
BEGIN;
SELECT llm.enqueue('gone', 'mock', target_table => 'docs', target_column => 'summary',
                   target_key => '{"id": 30}') AS gone_id \gset
DELETE FROM docs WHERE id = 30;
COMMIT;
SELECT wait_queue();
SELECT status, error FROM llm.queue WHERE id = :gone_id;

-- a job's reply that arrives after a newer item of the same row was
-- enqueued is kept in the queue but not written back: the newer one wins
-- whatever the order of arrival
BEGIN;
SELECT llm.enqueue('old input', 'mock?latency=1500', target_table => 'docs', target_column => 'summary',
                   target_key => '{"id": 5}') AS old_id \gset
SELECT llm.enqueue('new input', 'mock', target_table => 'docs', target_column => 'summary',
                   target_key => '{"id": 5}') AS new_id \gset
UPDATE llm.queue SET job = 'test-job', job_id = -1 WHERE id IN (:old_id, :new_id);
COMMIT;
SELECT wait_queue();
SELECT summary FROM docs WHERE id = 5;
SELECT prompt, status, reply FROM llm.queue WHERE id IN (:old_id, :new_id) ORDER BY id;

-- write-back runs with the rights of the role that enqueued
CREATE ROLE regress_llm_alice;
CREATE ROLE regress_llm_bob;
GRANT USAGE ON SCHEMA llm TO regress_llm_alice, regress_llm_bob;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO regress_llm_alice, regress_llm_bob;
GRANT SELECT ON llm.queue TO regress_llm_alice, regress_llm_bob;
CREATE TABLE alice_notes (id int PRIMARY KEY, body text, summary text);
ALTER TABLE alice_notes OWNER TO regress_llm_alice;
INSERT INTO alice_notes VALUES (1, 'note', NULL), (2, 'note', NULL);
GRANT SELECT ON alice_notes TO regress_llm_bob;
SET ROLE regress_llm_bob;
-- bob may read alice's table but not update it: refused at enqueue
SELECT llm.enqueue('x', 'mock', target_table => 'alice_notes', target_column => 'summary', target_key => '{"id": 1}');
RESET ROLE;
SET ROLE regress_llm_alice;
SELECT llm.enqueue('mine', 'mock', target_table => 'alice_notes', target_column => 'summary', target_key => '{"id": 1}') IS NOT NULL AS queued;
RESET ROLE;
-- a right taken away before the worker writes: the item fails, nothing is written
BEGIN;
GRANT UPDATE (summary) ON alice_notes TO regress_llm_bob;
SET LOCAL ROLE regress_llm_bob;
SELECT llm.enqueue('bob''s', 'mock', target_table => 'alice_notes', target_column => 'summary', target_key => '{"id": 2}') IS NOT NULL AS queued;
RESET ROLE;
REVOKE UPDATE (summary) ON alice_notes FROM regress_llm_bob;
COMMIT;
SELECT wait_queue();
SELECT * FROM alice_notes ORDER BY id;
SELECT prompt, status, error FROM llm.queue WHERE prompt IN ('mine', 'bob''s') ORDER BY prompt;
-- each role sees only its own items
SET ROLE regress_llm_alice;
SELECT prompt, status FROM llm.queue ORDER BY id;
RESET ROLE;

-- the worker reports itself
SELECT database, completed > 0 AS has_completed, failed >= 3 AS has_failed, in_flight
FROM llm.workers WHERE kind = 'queue worker';
SELECT backend_type FROM pg_stat_activity WHERE backend_type = 'pg_llm worker';
SELECT llm.purge_queue('0 seconds') > 0 AS purged;

DROP TABLE alice_notes;
REVOKE ALL ON llm.queue FROM regress_llm_alice, regress_llm_bob;
REVOKE ALL ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) FROM regress_llm_alice, regress_llm_bob;
REVOKE ALL ON SCHEMA llm FROM regress_llm_alice, regress_llm_bob;
DROP ROLE regress_llm_alice;
DROP ROLE regress_llm_bob;
