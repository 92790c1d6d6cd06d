-- A job with a json_schema and no result column: each answer is spread
-- over the columns its schema's properties name.
ALTER TABLE llm.job ADD COLUMN spread_columns name[];
