-- Answers with a shape (see before-shape.sql).
COMMENT ON COLUMN llm.queue.invalid_answers IS 'Answers that broke the item''s json_schema; each was asked for again with the validation error (at most llm.validation_retries times), the last one kept in reply while the item waits';
