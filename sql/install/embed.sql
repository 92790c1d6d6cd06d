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
