-- Embeddings: llm.usage says which task a request was (chat or embed) and
-- how many inputs an embedding request carried; usage_summary shows them.
ALTER TABLE llm.usage ADD COLUMN task text NOT NULL DEFAULT 'chat',
                      ADD COLUMN inputs integer;
DROP VIEW llm.usage_summary;
