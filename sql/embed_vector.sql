-- Embeddings into pgvector columns (test/embed_test.sh builds and installs
-- pgvector, then runs this test between setup and teardown): vectors from
-- llm.embed_many written into vector(n) and halfvec(n) columns, HNSW
-- indexes built over them, and nearest-neighbour queries whose answers are
-- checked.  The mock's vectors add up their words' vectors, so texts that
-- share words are near each other.
CREATE EXTENSION vector;
SELECT llm.add_model('emb', 'mock', 'text-embedding-3-small', input_usd_per_mtok => 20);
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL,
                   emb vector(64), emb_half halfvec(64), emb_sparse sparsevec(64));
INSERT INTO docs (id, body) VALUES
    (1, 'the cat sat on the mat'),
    (2, 'dogs bark at the mailman'),
    (3, 'stock markets fell sharply today'),
    (4, 'a kitten plays with yarn'),
    (5, 'the mailman delivers letters and parcels'),
    (6, 'bond yields rose as markets slid'),
    (7, 'fresh bread from the bakery'),
    (8, 'the bakery sells bread and cakes'),
    (9, 'rain and wind across the coast'),
    (10, 'a storm brings rain to the coast');

-- the enrichment pattern: one statement, rows keyed by ord
WITH batch AS (SELECT array_agg(id ORDER BY id) AS ids, array_agg(body ORDER BY id) AS bodies FROM docs)
UPDATE docs d SET emb = m.embedding::vector(64), emb_half = m.embedding::halfvec(64),
                  emb_sparse = m.embedding::sparsevec(64)
FROM batch, llm.embed_many(batch.bodies, 'emb', '{"dimensions": 64}') m
WHERE d.id = batch.ids[m.ord] AND m.error IS NULL;
SELECT count(emb) AS vectors, count(emb_half) AS halfvecs, count(emb_sparse) AS sparsevecs,
       min(vector_dims(emb)) AS dims FROM docs;
-- a vector of other dimensions than the column's does not fit
UPDATE docs SET emb = llm.embed(body, 'emb', '{"dimensions": 32}')::vector(64) WHERE id = 1;

CREATE INDEX docs_emb ON docs USING hnsw (emb vector_cosine_ops);
CREATE INDEX docs_emb_half ON docs USING hnsw (emb_half halfvec_cosine_ops);
SET enable_seqscan = off;
-- the index answers the query
EXPLAIN (COSTS OFF) SELECT id FROM docs ORDER BY emb <=> '[1]'::vector(1) LIMIT 2;
SELECT llm.embed('a cat on a mat', 'emb', '{"dimensions": 64}')::vector(64) AS q \gset
SELECT id, body FROM docs ORDER BY emb <=> :'q' LIMIT 1;
SELECT id, body FROM docs ORDER BY emb_half <=> :'q'::halfvec(64) LIMIT 1;
SELECT llm.embed('where is the mailman', 'emb', '{"dimensions": 64}')::vector(64) AS q \gset
SELECT id, body FROM docs ORDER BY emb <=> :'q' LIMIT 2;
SELECT llm.embed('bread from a bakery', 'emb', '{"dimensions": 64}')::vector(64) AS q \gset
SELECT id, body FROM docs ORDER BY emb <=> :'q' LIMIT 2;
-- and gives the exact answer
SELECT llm.embed('markets', 'emb', '{"dimensions": 64}')::vector(64) AS q \gset
SELECT array_agg(id) AS by_index FROM (SELECT id FROM docs ORDER BY emb <=> :'q' LIMIT 2) s;
RESET enable_seqscan;
SET enable_indexscan = off;
SELECT array_agg(id) AS exact FROM (SELECT id FROM docs ORDER BY emb <=> :'q' LIMIT 2) s;
RESET enable_indexscan;
-- the sparse vector holds the same values
SELECT bool_and(emb_sparse::vector = emb) AS sparse_same FROM docs;


-- the queue: the worker writes each vector through its column type's input
-- function, pgvector's types included (pg_llm does not link to pgvector)
CREATE TABLE qdocs (id int PRIMARY KEY, body text NOT NULL,
                    emb vector(64), emb_half halfvec(64), emb_sparse sparsevec(64));
INSERT INTO qdocs SELECT id, body FROM docs;
SELECT count(llm.enqueue_embedding(body, 'emb', 'qdocs', c, jsonb_build_object('id', id), '{"dimensions": 64}'))
FROM qdocs, unnest(ARRAY['emb', 'emb_half', 'emb_sparse']) AS c;
SELECT wait_queue();
SELECT count(*) FILTER (WHERE q.emb = d.emb) AS vectors_as_embed_many,
       count(*) FILTER (WHERE q.emb_half = d.emb_half) AS halfvecs,
       count(*) FILTER (WHERE q.emb_sparse = d.emb_sparse) AS sparsevecs
FROM qdocs q JOIN docs d USING (id);
CREATE INDEX qdocs_emb ON qdocs USING hnsw (emb vector_l2_ops);
CREATE INDEX qdocs_emb_half ON qdocs USING hnsw (emb_half halfvec_l2_ops);
SET enable_seqscan = off;
CREATE FUNCTION plan_uses(query text, index_name text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
        IF line LIKE '%Index Scan using ' || index_name || ' %' THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END;
$$;
SELECT llm.embed('letters and parcels for the mailman', 'emb', '{"dimensions": 64}')::vector(64) AS q \gset
SELECT plan_uses(format('SELECT id FROM qdocs ORDER BY emb <-> %L::vector(64) LIMIT 1', :'q'), 'qdocs_emb') AS hnsw_used;
SELECT id, body FROM qdocs ORDER BY emb <-> :'q' LIMIT 1;
SELECT id, body FROM qdocs ORDER BY emb_half <-> :'q'::halfvec(64) LIMIT 1;
RESET enable_seqscan;

-- a vector of other dimensions than the column's fails its item clearly,
-- with the vector kept in the queue (it was paid for); when the options ask
-- for other dimensions than the column holds, nothing is queued
UPDATE qdocs SET emb = NULL WHERE id = 1;
SELECT llm.enqueue_embedding(body, 'emb', 'qdocs', 'emb', '{"id": 1}') IS NOT NULL AS queued FROM qdocs WHERE id = 1;
SELECT wait_queue();
SELECT status, error, answered, array_length(string_to_array(trim(both '[]' from reply), ','), 1) AS kept_dims
FROM llm.queue WHERE target_table = 'qdocs'::regclass AND target_key = '{"id": 1}' ORDER BY id DESC LIMIT 1;
SELECT emb IS NULL AS nothing_written FROM qdocs WHERE id = 1;
SELECT llm.enqueue_embedding('x', 'emb', 'qdocs', 'emb', '{"id": 1}', '{"dimensions": 32}');

-- through a relay's inline /batches (via => 'batch_api'): one input a line
-- (url /embeddings, from the relay's batch_url), each vector written into
-- its row as realtime ones are; an input over the model's limit fails alone
-- with the relay's words; usage one row a request at the batch price
SELECT llm.create_provider('e-relay', 'openai', (SELECT base_url FROM llm.provider WHERE name = 'mock'),
                           api_key => 'sk-mock',
                           options => '{"batch_api": "inline", "batch_url": "/chat/completions"}');
SELECT llm.add_model('emb-batch', 'e-relay', 'text-embedding-3-small?max_input_tokens=8', input_usd_per_mtok => 20);
CREATE TABLE bdocs (id int PRIMARY KEY, body text NOT NULL, emb vector(64));
INSERT INTO bdocs SELECT id, body FROM docs;
INSERT INTO bdocs VALUES (11, 'this input is far too long for the little model to take in at once');
SELECT count(llm.enqueue_embedding(body, 'emb-batch', 'bdocs', 'emb', jsonb_build_object('id', id),
                                   '{"dimensions": 64}', via => 'batch_api'))
FROM bdocs;
SELECT wait_queue();
SELECT count(*) FILTER (WHERE b.emb = d.emb) AS as_realtime, count(*) FILTER (WHERE b.emb IS NULL) AS not_written
FROM bdocs b LEFT JOIN docs d USING (id);
SELECT target_key, status, error FROM llm.queue WHERE target_table = 'bdocs'::regclass AND status <> 'done';
SELECT kind, task, status, requests, succeeded, errored FROM llm.batches WHERE model = 'emb-batch';
SELECT wait_until('SELECT count(*) = 11 FROM llm.usage WHERE model = ''emb-batch''', 'written');
SELECT task, mode, outcome, count(*) AS requests, sum(inputs) AS inputs, sum(input_tokens) AS input_tokens,
       sum(cost_usd) AS cost_usd, sum(cost_usd) = sum(input_tokens) * 20 / 1e6 * 0.5 AS at_half_price
FROM llm.usage WHERE model = 'emb-batch' GROUP BY 1, 2, 3 ORDER BY 3;
SELECT mode, embedded_inputs, calls FROM llm.usage_summary WHERE model = 'emb-batch' AND task = 'embed';
DROP TABLE bdocs;
SELECT llm.drop_provider('e-relay');

-- a job keeps the column embedded: rows inserted and changed are embedded
-- (task => 'embed'), an update that leaves the rendered input as it was
-- costs nothing (the input's hash is kept with the item)
CREATE TABLE notes (id int PRIMARY KEY, title text, body text, likes int DEFAULT 0, emb vector(64));
INSERT INTO notes VALUES (1, 'cats', 'the cat sat on the mat'), (2, 'dogs', 'dogs bark at the mailman');
SELECT llm.create_job('note_embeddings', 'notes', '{id}', '{title} {body}', 'emb', model => 'emb',
                      options => '{"dimensions": 64}', task => 'embed');
SELECT task, model FROM llm.job WHERE name = 'note_embeddings';
SELECT llm.run_job('note_embeddings');
INSERT INTO notes VALUES (3, 'bread', 'fresh bread from the bakery');
SELECT wait_queue();
SELECT count(*) FILTER (WHERE emb = llm.embed(title || ' ' || body, 'emb', '{"dimensions": 64}')::vector(64)) AS embedded
FROM notes;
SELECT count(*) AS items FROM llm.queue WHERE job = 'note_embeddings';
UPDATE notes SET likes = likes + 1;
-- (each looked at before its commit: after it, the worker may have
-- embedded the row again)
BEGIN;
UPDATE notes SET title = 'cats the', body = 'cat sat on the mat' WHERE id = 1;
SELECT emb IS NOT NULL AS still_embedded FROM notes WHERE id = 1;
COMMIT;
BEGIN;
UPDATE notes SET body = 'the bakery sells bread and cakes' WHERE id = 3;
SELECT emb IS NULL AS reset_until_embedded_again FROM notes WHERE id = 3;
COMMIT;
SELECT wait_queue();
SELECT count(*) AS items, count(*) FILTER (WHERE status = 'done') AS done
FROM llm.queue WHERE job = 'note_embeddings';
SELECT count(*) FILTER (WHERE emb = llm.embed(title || ' ' || body, 'emb', '{"dimensions": 64}')::vector(64)) AS embedded
FROM notes;
-- an embedding job checks its result column and options like enqueue_embedding
\set SHOW_CONTEXT never
SELECT llm.create_job('bad_dims', 'notes', '{id}', '{body}', 'emb', model => 'emb',
                      options => '{"dimensions": 8}', task => 'embed');
SELECT llm.create_job('bad_column', 'notes', '{id}', '{body}', 'likes', model => 'emb', task => 'embed');
SELECT llm.create_job('bad_system', 'notes', '{id}', '{body}', 'emb', model => 'emb', system => 'Be brief.',
                      task => 'embed');
SELECT llm.create_job('bad_task', 'notes', '{id}', '{body}', 'emb', model => 'emb', task => 'summarize');
-- a model its embedding job uses cannot be routed to a protocol without embeddings
SELECT llm.add_model('emb', 'claude', 'claude-x', priority => 200);
\set SHOW_CONTEXT errors
SELECT llm.drop_job('note_embeddings');

-- usage: one row a request, its inputs and tokens, at the input price
SELECT wait_until('SELECT pending = 0 FROM llm.usage_buffer_status()', 'written');
SELECT task, mode, count(*) > 0 AS requests, sum(inputs) >= 30 AS inputs, bool_and(cost_usd > 0) AS priced
FROM llm.usage WHERE model = 'emb' AND mode = 'queue' GROUP BY 1, 2;

DROP FUNCTION plan_uses(text, text);
DROP TABLE notes;
DROP TABLE qdocs;
DROP TABLE docs;
SELECT llm.drop_model('emb');
DROP EXTENSION vector;
