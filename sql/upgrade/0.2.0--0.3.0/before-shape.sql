-- Answers with a shape: the answers of a queue item that broke its
-- json_schema, each asked for again with the validation error.
ALTER TABLE llm.queue ADD COLUMN invalid_answers integer NOT NULL DEFAULT 0;
ALTER TABLE llm.queue ADD COLUMN spread boolean NOT NULL DEFAULT false;
