-- Embeddings: one vector, or many inputs packed into each request.

CREATE FUNCTION llm.embed(input text, model text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS real[]
AS 'MODULE_PATHNAME', 'pg_llm_embed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.embed(text, text, jsonb) IS 'The embedding of a text, from an embedding model (options: dimensions, user); NULL for a NULL input; cast it to pgvector''s vector to store or search it';

CREATE FUNCTION llm.embed_many(inputs text[], model text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS TABLE (ord integer, embedding real[], error text)
AS 'MODULE_PATHNAME', 'pg_llm_embed_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000;
COMMENT ON FUNCTION llm.embed_many(text[], text, jsonb) IS 'Embed many texts at once: up to llm.embed_inputs_per_request inputs packed into each request, up to llm.many_concurrency requests in flight; one row per input as its request completes: its place in the array, its vector, or the error of an input that failed';

CREATE FUNCTION llm.enqueue_embedding(
    input text,
    model text DEFAULT NULL,
    target_table regclass DEFAULT NULL,
    target_column name DEFAULT NULL,
    target_key jsonb DEFAULT NULL,
    options jsonb DEFAULT NULL,
    via text DEFAULT 'realtime')
RETURNS bigint
AS 'MODULE_PATHNAME', 'pg_llm_enqueue_embedding'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.enqueue_embedding(text, text, regclass, name, jsonb, jsonb, text) IS 'Queue a text to embed: the worker packs the pending items of a model into requests of many inputs and writes each vector into its target row (real[], float8[], pgvector''s vector, halfvec or sparsevec, text or JSON), with the rights of the role that enqueued it; via => ''batch_api'' sends it through its provider''s batch API; NULL for a NULL input, which is not queued';
