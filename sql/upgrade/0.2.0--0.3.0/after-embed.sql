-- Embeddings: the comments of llm.usage and its new columns.
COMMENT ON TABLE llm.usage IS 'One row per call: mode (sync, stream, many, queue, batch_api), task (chat, embed), provider, model, outcome, HTTP status, attempts, fallback, tokens, latency, time to first chunk, cost; each role sees its own rows';
COMMENT ON COLUMN llm.usage.task IS 'What the request asked for: chat (a reply) or embed (embeddings)';
COMMENT ON COLUMN llm.usage.inputs IS 'The number of inputs of an embedding request (NULL for chat)';
COMMENT ON COLUMN llm.queue.task IS 'chat: the prompt is answered; embed: the prompt is the input of an embedding, and the reply its vector ([v1,...])';
COMMENT ON COLUMN llm.queue.input_hash IS 'Of a job''s embedding item: the hash of its input, so that a row whose rendered input did not change is not embedded again';
COMMENT ON COLUMN llm.job.task IS 'chat: the rendered prompt is answered; embed: it is embedded, and its vector written into the result column (a row whose rendered input did not change is not embedded again)';
COMMENT ON COLUMN llm._batch.task IS 'chat, or embed: its requests are embeddings (endpoint /v1/embeddings), one input each';
