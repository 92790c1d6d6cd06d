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

DROP TABLE docs;
SELECT llm.drop_model('emb');
DROP EXTENSION vector;
