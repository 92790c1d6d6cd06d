-- Embeddings: llm.usage says which task a request was (chat or embed) and
-- how many inputs an embedding request carried; usage_summary shows them.
ALTER TABLE llm.usage ADD COLUMN task text NOT NULL DEFAULT 'chat',
                      ADD COLUMN inputs integer;
DROP VIEW llm.usage_summary;
-- the queue's embedding items, and the hash of a job item's input; the
-- ready chat items and the ready embedding items are claimed each through
-- an index of their own
ALTER TABLE llm.queue ADD COLUMN task text NOT NULL DEFAULT 'chat' CHECK (task IN ('chat', 'embed')),
                      ADD COLUMN input_hash bigint;
DROP INDEX llm.queue_ready;
CREATE INDEX queue_ready ON llm.queue (enqueued_by, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'realtime' AND task = 'chat';
CREATE INDEX queue_embed_ready ON llm.queue (enqueued_by, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'realtime' AND task = 'embed';
-- embedding jobs: llm.job says which task a job does, and create_job
-- takes it (create_job of 0.2.0 is dropped by before-worker.sql)
ALTER TABLE llm.job ADD COLUMN task text NOT NULL DEFAULT 'chat' CHECK (task IN ('chat', 'embed'));
-- embeddings through provider batch APIs: a batch is of one task
ALTER TABLE llm._batch ADD COLUMN task text NOT NULL DEFAULT 'chat' CHECK (task IN ('chat', 'embed'));
