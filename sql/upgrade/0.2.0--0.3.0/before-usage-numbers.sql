-- Usage rows hold any cost a call can have (a usage number of a billion
-- tokens at any price), and say when pg_llm counted the tokens itself.
-- The views over llm.usage are defined again afterwards.
DROP VIEW IF EXISTS llm.usage_summary;
DROP VIEW IF EXISTS llm.budgets;
ALTER TABLE llm.usage ALTER COLUMN cost_usd TYPE numeric;
ALTER TABLE llm.usage ADD COLUMN estimated boolean NOT NULL DEFAULT false;
