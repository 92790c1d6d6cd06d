-- Estimates: what sending prompts would use and cost, before anything is
-- sent.

CREATE FUNCTION llm.estimate(prompts text[], model text DEFAULT NULL, system text DEFAULT NULL,
                             options jsonb DEFAULT NULL)
RETURNS TABLE (provider text, requests bigint, input_tokens bigint, output_tokens bigint,
               cost_usd numeric, batch_cost_usd numeric, within_budget boolean)
AS 'MODULE_PATHNAME', 'pg_llm_estimate'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.estimate(text[], text, text, jsonb) IS 'What sending the prompts (NULL, empty and blank ones are not sent) to a model would use and cost, on each route of the model (its own first, then its fallback chain): requests, input tokens (estimated without a tokenizer, or counted by a provider with the option count_tokens), output tokens (max_tokens, else 256, times n), the cost at realtime and at batch prices (NULL, with a WARNING, on a route without prices), and whether the caller''s budget allows it';

CREATE FUNCTION llm.estimate_job(name text)
RETURNS TABLE (provider text, requests bigint, input_tokens bigint, output_tokens bigint,
               cost_usd numeric, batch_cost_usd numeric, within_budget boolean)
AS 'MODULE_PATHNAME', 'pg_llm_estimate_job'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.estimate_job(text) IS 'llm.estimate over the rows of a job that have no result yet (read as the job''s owner, as run_job reads them), with the job''s model, system prompt and options';
