-- Answers with a shape (see before-shape.sql).
COMMENT ON COLUMN llm.queue.invalid_answers IS 'Answers that broke the item''s json_schema; each was asked for again with the validation error (at most llm.validation_retries times), the last one kept in reply while the item waits';
COMMENT ON COLUMN llm.queue.spread IS 'The answer''s properties are written into the target''s columns of the same names (target_column is NULL)';
