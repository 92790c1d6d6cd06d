-- A job whose answers are spread over columns (see before-shape-jobs.sql).
COMMENT ON COLUMN llm.job.spread_columns IS 'With a json_schema and no result_column: the columns of the result table each answer is spread over, named by the schema''s properties (derived from it); NULL: the answer goes into result_column';
