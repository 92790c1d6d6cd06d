-- Jobs: a column kept filled with a model's analysis of each row, by the
-- queue worker (the test instance preloads pg_llm and runs a worker for
-- this database).
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
\set SHOW_CONTEXT never
TRUNCATE llm.queue;

CREATE TABLE jobs_reviews (id int PRIMARY KEY, body text, stars int, sentiment text, n int, j jsonb,
                      shout text GENERATED ALWAYS AS (upper(body)) STORED);
INSERT INTO jobs_reviews (id, body, stars)
SELECT g, CASE g % 3 WHEN 0 THEN 'great, love it' WHEN 1 THEN 'awful and broken' ELSE 'it arrived' END, g % 5 + 1
FROM generate_series(1, 30) g;
CREATE VIEW jobs_reviews_view AS SELECT * FROM jobs_reviews;

-- definitions are checked when the job is created
SELECT llm.create_job('bad name!', 'jobs_reviews', '{id}', 'Classify: {body}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews_view', '{id}', 'Classify: {body}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {bdy}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: body}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify this review', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {shout}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{}', 'Classify: {body}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{nope}', 'Classify: {body}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{stars}', 'Classify: {body}', 'sentiment', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'nope', model => 'mock');
-- a result column of any type takes replies (its input function reads them)
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'n', model => 'mock', track_changes => false);
SELECT llm.drop_job('s');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'body', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'id', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'shout', model => 'mock');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'sentiment');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'sentiment', model => 'mock',
                      options => '{"temperature": 9}');
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'sentiment', model => 'mock',
                      options => '[1]');
-- (a json_schema the worker could not validate against)
SELECT llm.create_job('s', 'jobs_reviews', '{id}', 'Classify: {body}', 'sentiment', model => 'mock',
                      options => '{"json_schema": {"type": "object", "properties": {"d": {"format": "date"}}}}');
-- nothing is left behind by a refused definition
SELECT count(*) AS jobs FROM llm.job;
SELECT count(*) AS functions FROM pg_proc WHERE proname LIKE '\_job\_s\_%';
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'llm\_job\_s\_%';
SELECT count(*) AS items FROM llm.queue;

-- a job writing into the source table; it tracks inserts and changes
SELECT llm.create_job('sentiment', 'jobs_reviews', '{id}',
                      'Classify the sentiment of this review: {body} ({ stars } stars, {{verbatim}})',
                      'sentiment', model => 'mock', system => 'Answer with one word.',
                      options => '{"temperature": 0}');
SELECT llm.create_job('sentiment', 'jobs_reviews', '{id}', 'Classify: {body}', 'sentiment', model => 'mock');
SELECT name, owner, source_table, key_columns, prompt_template, input_columns, result_table,
       result_column, model, system, options, track_changes
FROM llm.job;
-- every job's triggers call the extension's one trigger function, with the
-- job's id
SELECT tgname, replace(pg_get_triggerdef(oid), format('(%L)', (SELECT id FROM llm.job WHERE name = 'sentiment')::text),
                       '(<the job''s id>)') AS definition
FROM pg_trigger WHERE tgrelid = 'jobs_reviews'::regclass ORDER BY tgname;

-- the backfill: queued in one statement, visible to the worker at commit,
-- and not queued twice
BEGIN;
SELECT llm.run_job('sentiment');
SELECT llm.run_job('sentiment');
SELECT job, pending, running, done, failed, percent_done, eta FROM llm.job_status;
SELECT prompt, system, model, options, target_table, target_column, target_key,
       enqueued_by::regrole, job
FROM llm.queue WHERE target_key = '{"id": 3}';
COMMIT;
SELECT wait_queue();
SELECT sentiment, count(*), min(body), max(body) FROM jobs_reviews GROUP BY sentiment ORDER BY sentiment;
SELECT job, pending, running, done, failed, percent_done, items_per_second > 0 AS has_rate, eta,
       last_finished IS NOT NULL AS has_finished, last_error
FROM llm.job_status;
-- every row has a result: nothing to do
SELECT llm.run_job('sentiment');

-- inserted rows are queued, a statement at a time; rows inserted with a
-- result, or with no input, are not
BEGIN;
INSERT INTO jobs_reviews (id, body, stars) VALUES (31, 'love it, great', 5), (32, NULL, NULL), (33, 'broken', 1);
INSERT INTO jobs_reviews (id, body, sentiment) VALUES (34, 'great', 'given');
-- an input that changes: the result is reset and the row queued again
UPDATE jobs_reviews SET body = 'awful, broken' WHERE id = 3;
-- an input set to the same value, or a column the template does not use:
-- nothing happens
UPDATE jobs_reviews SET body = body, n = 1 WHERE id BETWEEN 1 AND 2;
-- an input changed together with the result: the statement's result stays
UPDATE jobs_reviews SET body = 'great', sentiment = 'by hand' WHERE id = 4;
-- inputs that become NULL: reset, nothing to send
UPDATE jobs_reviews SET body = NULL, stars = NULL WHERE id = 5;
-- a row changed twice: its pending item is replaced by the newest input
UPDATE jobs_reviews SET body = 'love it' WHERE id = 6;
UPDATE jobs_reviews SET stars = 2 WHERE id = 6;
SELECT id, body, stars, sentiment FROM jobs_reviews WHERE id <= 6 OR id > 30 ORDER BY id;
SELECT target_key, prompt FROM llm.queue WHERE status = 'pending' ORDER BY id;
COMMIT;
SELECT wait_queue();
SELECT id, body, stars, sentiment FROM jobs_reviews WHERE id <= 6 OR id > 30 ORDER BY id;
-- writing the results queued nothing
SELECT count(*) FROM llm.queue WHERE status = 'pending';
-- a row without a result is sent again by run_job
UPDATE jobs_reviews SET sentiment = NULL WHERE id IN (1, 2);
SELECT llm.run_job('sentiment');
SELECT wait_queue();
SELECT id, sentiment FROM jobs_reviews WHERE id IN (1, 2) ORDER BY id;
SELECT job, pending, running, done, failed, percent_done FROM llm.job_status;

-- a separate result table with a two-column key: the job adds the key rows
CREATE TABLE jobs_tickets (team text, no int, subject text, body text, PRIMARY KEY (team, no));
INSERT INTO jobs_tickets VALUES ('db', 1, 'slow query', 'the report takes an hour'),
                           ('db', 2, 'backup', NULL),
                           ('web', 1, 'login', 'users cannot log in');
CREATE TABLE jobs_ticket_summary (team text, no int, summary text, noted_at timestamptz DEFAULT now(),
                             PRIMARY KEY (team, no));
CREATE TABLE jobs_ticket_bad (team text, no int, summary text);
CREATE TABLE jobs_ticket_strict (team text, no int, summary text, reviewer text NOT NULL, PRIMARY KEY (team, no));
CREATE TABLE jobs_ticket_one (team text, no int, summary text, PRIMARY KEY (team, no));
SELECT llm.create_job('summary', 'jobs_tickets', '{team,no}', 'Summarize: {subject}: {body}',
                      result_table => 'jobs_ticket_summary', model => 'mock');
SELECT llm.create_job('summary', 'jobs_tickets', '{team,no}', 'Summarize: {subject}: {body}',
                      'summary', 'jobs_ticket_bad', model => 'mock');
SELECT llm.create_job('summary', 'jobs_tickets', '{team,no}', 'Summarize: {subject}: {body}',
                      'summary', 'jobs_ticket_strict', model => 'mock');
SELECT llm.create_job('summary', 'jobs_tickets', '{team}', 'Summarize: {subject}: {body}',
                      'summary', 'jobs_ticket_summary', model => 'mock');
-- the result table's only column besides the key is the result column
SELECT llm.create_job('short', 'jobs_tickets', '{team,no}', 'In three words: {subject}',
                      result_table => 'jobs_ticket_one', model => 'mock', track_changes => false);
SELECT result_table, result_column FROM llm.job WHERE name = 'short';
SELECT llm.create_job('summary', 'jobs_tickets', '{team,no}', 'Summarize: {subject}: {body}',
                      'summary', 'jobs_ticket_summary', model => 'mock');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs_tickets'::regclass ORDER BY tgname;
SELECT llm.run_job('summary'), llm.run_job('short');
SELECT wait_queue();
SELECT team, no, summary FROM jobs_ticket_summary ORDER BY team, no;
SELECT team, no, summary FROM jobs_ticket_one ORDER BY team, no;
INSERT INTO jobs_tickets VALUES ('web', 2, 'css', 'the button is blue');
UPDATE jobs_tickets SET body = 'restore failed' WHERE team = 'db' AND no = 2;
SELECT wait_queue();
SELECT team, no, summary FROM jobs_ticket_summary ORDER BY team, no;
SELECT llm.run_job('summary');

-- a partitioned source: rows inserted into a partition directly are seen too
CREATE TABLE jobs_events (region text, id int, body text, label text, PRIMARY KEY (region, id))
    PARTITION BY LIST (region);
CREATE TABLE jobs_events_eu PARTITION OF jobs_events FOR VALUES IN ('eu');
SELECT llm.create_job('label', 'jobs_events', '{region,id}', 'Label the sentiment: {body}', 'label',
                      model => 'mock');
CREATE TABLE jobs_events_us PARTITION OF jobs_events FOR VALUES IN ('us');
BEGIN;
INSERT INTO jobs_events VALUES ('eu', 1, 'love it', NULL), ('us', 1, 'awful', NULL), ('us', 2, 'fine', 'given');
INSERT INTO jobs_events_us VALUES ('us', 3, 'great', NULL);
UPDATE jobs_events_eu SET body = 'broken' WHERE id = 1;
COMMIT;
SELECT wait_queue();
SELECT * FROM jobs_events ORDER BY region, id;
SELECT target_key, prompt FROM llm.queue WHERE job = 'label' ORDER BY id;
SELECT llm.drop_job('label');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'llm\_job\_label\_%';

-- failed items are counted, with the last error, and not as done; run_job
-- sends their rows again, and a row's newer item takes the place of its
-- old failure
CREATE TABLE jobs_notes (id int PRIMARY KEY, body text, verdict text);
INSERT INTO jobs_notes SELECT g, 'note ' || g FROM generate_series(1, 3) g;
SELECT llm.create_job('refused', 'jobs_notes', '{id}', 'Judge: {body}', 'verdict',
                      model => 'mock?fail=400', track_changes => false);
SELECT llm.run_job('refused');
SELECT wait_queue();
SELECT job, pending, running, done, failed, percent_done, percent_failed, last_error FROM llm.job_status WHERE job = 'refused';
SELECT llm.run_job('refused');
SELECT wait_queue();
SELECT job, done, failed, percent_failed FROM llm.job_status WHERE job = 'refused';
SELECT count(*) AS failed_items_kept FROM llm.queue q JOIN llm.job j ON j.id = q.job_id
WHERE j.name = 'refused' AND q.status = 'failed';

-- a job runs as the role that created it; the roles that write its source
-- table need nothing from llm
CREATE ROLE regress_llm_job_owner;
CREATE ROLE regress_llm_job_writer;
CREATE ROLE regress_llm_job_other;
GRANT USAGE ON SCHEMA llm TO regress_llm_job_owner, regress_llm_job_other;
GRANT EXECUTE ON FUNCTION
    llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text, text, text),
    llm.run_job(text), llm.drop_job(text, boolean) TO regress_llm_job_owner, regress_llm_job_other;
GRANT SELECT, INSERT, DELETE ON llm.job TO regress_llm_job_owner, regress_llm_job_other;
GRANT SELECT ON llm.job_status TO regress_llm_job_owner, regress_llm_job_other;
CREATE TABLE jobs_owned (id int PRIMARY KEY, body text, summary text);
ALTER TABLE jobs_owned OWNER TO regress_llm_job_owner;
GRANT SELECT, INSERT, UPDATE (body) ON jobs_owned TO regress_llm_job_writer;
GRANT SELECT ON jobs_owned TO regress_llm_job_other;
SET ROLE regress_llm_job_other;
SELECT llm.create_job('owned', 'jobs_owned', '{id}', 'Summarize: {body}', 'summary', model => 'mock');
RESET ROLE;
SET ROLE regress_llm_job_owner;
SELECT llm.create_job('owned', 'jobs_owned', '{id}', 'Summarize: {body}', 'summary', model => 'mock');
RESET ROLE;
BEGIN;
SET LOCAL ROLE regress_llm_job_writer;
INSERT INTO jobs_owned (id, body) VALUES (1, 'document one'), (2, 'document two');
UPDATE jobs_owned SET body = 'document 2' WHERE id = 2;
COMMIT;
SELECT wait_queue();
SELECT * FROM jobs_owned ORDER BY id;
SELECT target_key, prompt, status, enqueued_by::regrole FROM llm.queue WHERE job = 'owned' ORDER BY id;
-- another role sees, runs and drops none of it, and can neither store a
-- job directly nor use the jobs' trigger function
SELECT id AS owned_id FROM llm.job WHERE name = 'owned' \gset
SET ROLE regress_llm_job_other;
SELECT name FROM llm.job;
SELECT job FROM llm.job_status;
SELECT llm.run_job('owned');
SELECT llm.drop_job('owned');
INSERT INTO llm.job (name, owner, source_table, key_columns, prompt_template, result_column, model)
VALUES ('mine', 'regress_llm_job_other', 'jobs_owned', '{id}', '{body}', 'summary', 'mock');
INSERT INTO llm.job (id, name, owner, source_table, key_columns, prompt_template, result_column, model)
VALUES (-1, 'mine', 'regress_llm_job_other', 'jobs_owned', '{id}', '{body}', 'summary', 'mock');
SELECT llm._job_trigger();
RESET ROLE;
CREATE TABLE jobs_other (id int PRIMARY KEY, body text, summary text);
ALTER TABLE jobs_other OWNER TO regress_llm_job_other;
SET ROLE regress_llm_job_other;
CREATE TRIGGER steal AFTER INSERT ON jobs_other REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION llm._job_trigger(:'owned_id');
RESET ROLE;
-- (and a trigger put there by someone who may refuses to run on another table)
CREATE TRIGGER steal AFTER INSERT ON jobs_other REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION llm._job_trigger(:'owned_id');
INSERT INTO jobs_other VALUES (1, 'not the job''s', NULL);
DROP TRIGGER steal ON jobs_other;
-- the owner runs it; so may a superuser, and the job still runs as its owner
SET ROLE regress_llm_job_owner;
SELECT name, owner FROM llm.job;
SELECT job, owner, done FROM llm.job_status;
UPDATE jobs_owned SET summary = NULL WHERE id = 1;
SELECT llm.run_job('owned');
RESET ROLE;
-- (run_job reads the rows without a result and queues them in later
-- statements: an item that finishes in between can be queued again, so
-- this waits for the first run before the second)
SELECT wait_queue();
UPDATE jobs_owned SET summary = NULL WHERE id = 2;
SELECT llm.run_job('owned');
SELECT wait_queue();
SELECT target_key, status, enqueued_by::regrole FROM llm.queue WHERE job = 'owned' ORDER BY id;
SELECT * FROM jobs_owned ORDER BY id;
SET ROLE regress_llm_job_owner;
SELECT llm.drop_job('owned');
RESET ROLE;
-- row-level security that applies to the owner: no trigger sees its rows
CREATE TABLE jobs_rls (id int PRIMARY KEY, body text, summary text);
ALTER TABLE jobs_rls ENABLE ROW LEVEL SECURITY;
GRANT SELECT, UPDATE, TRIGGER ON jobs_rls TO regress_llm_job_owner;
SET ROLE regress_llm_job_owner;
SELECT llm.create_job('rls', 'jobs_rls', '{id}', 'Summarize: {body}', 'summary', model => 'mock');
SELECT llm.create_job('rls', 'jobs_rls', '{id}', 'Summarize: {body}', 'summary', model => 'mock',
                      track_changes => false);
SELECT llm.drop_job('rls');
RESET ROLE;

-- dropping a job removes its triggers and functions; its items stay
SELECT llm.drop_job('sentiment');
SELECT llm.drop_job('sentiment');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'jobs_reviews'::regclass;
INSERT INTO jobs_reviews (id, body) VALUES (40, 'love it');
SELECT count(*) AS items_kept, count(*) FILTER (WHERE target_key = '{"id": 40}') AS new_items
FROM llm.queue WHERE job = 'sentiment';
SELECT job FROM llm.job_status;
TRUNCATE llm.job;
SELECT llm.drop_job('summary'), llm.drop_job('short'), llm.drop_job('refused');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgfoid = 'llm._job_trigger()'::regprocedure;
SELECT tgname FROM pg_trigger WHERE tgrelid IN ('jobs_tickets'::regclass, 'jobs_owned'::regclass);

DROP TABLE jobs_events, jobs_reviews, jobs_tickets, jobs_ticket_summary, jobs_ticket_bad, jobs_ticket_strict, jobs_ticket_one, jobs_notes,
           jobs_owned, jobs_other, jobs_rls CASCADE;
REVOKE ALL ON llm.job, llm.job_status FROM regress_llm_job_owner, regress_llm_job_other;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM regress_llm_job_owner, regress_llm_job_other;
REVOKE ALL ON SCHEMA llm FROM regress_llm_job_owner, regress_llm_job_other;
DROP ROLE regress_llm_job_owner;
DROP ROLE regress_llm_job_writer;
DROP ROLE regress_llm_job_other;
