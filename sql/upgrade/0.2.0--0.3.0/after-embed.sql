-- Embeddings: the comments of llm.usage and its new columns.
COMMENT ON TABLE llm.usage IS 'One row per call: mode (sync, stream, many, queue, batch_api), task (chat, embed), provider, model, outcome, HTTP status, attempts, fallback, tokens, latency, time to first chunk, cost; each role sees its own rows';
COMMENT ON COLUMN llm.usage.task IS 'What the request asked for: chat (a reply) or embed (embeddings)';
COMMENT ON COLUMN llm.usage.inputs IS 'The number of inputs of an embedding request (NULL for chat)';
