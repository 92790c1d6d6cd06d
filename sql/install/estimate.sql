-- Estimates: what sending prompts would use and cost, before anything is
-- sent.

CREATE FUNCTION llm.estimate(prompts text[], model text DEFAULT NULL, system text DEFAULT NULL,
                             options jsonb DEFAULT NULL)
RETURNS TABLE (provider text, requests bigint, input_tokens bigint, output_tokens bigint,
               cost_usd numeric, batch_cost_usd numeric, within_budget boolean)
AS 'MODULE_PATHNAME', 'pg_llm_estimate'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.estimate(text[], text, text, jsonb) IS 'What sending the prompts (NULL and empty ones are not sent) to a model would use and cost, on each route of the model (its own first, then its fallback chain): requests, input tokens (estimated without a tokenizer, or counted by a provider with the option count_tokens), output tokens (max_tokens, else 256, times n), the cost at realtime and at batch prices (NULL, with a WARNING, on a route without prices), and whether the caller''s budget allows it';

CREATE FUNCTION llm.estimate_job(name text)
RETURNS TABLE (provider text, requests bigint, input_tokens bigint, output_tokens bigint,
               cost_usd numeric, batch_cost_usd numeric, within_budget boolean)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    prompts text[];
BEGIN
    SELECT * INTO j FROM llm.job WHERE llm.job.name = estimate_job.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', estimate_job.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'llm.job lists the jobs you can see.';
    END IF;
    -- the rows without a result: what run_job and the queue still have to send
    EXECUTE format('SELECT array_agg(q.prompt) FROM (%s) AS q', (llm._job_sql(j)).statements[3])
        INTO prompts;
    RETURN QUERY SELECT * FROM llm.estimate(coalesce(prompts, '{}'), j.model, j.system, j.options);
END;
$$;
COMMENT ON FUNCTION llm.estimate_job(text) IS 'llm.estimate over the rows of a job that have no result yet (read with the caller''s rights), with the job''s model, system prompt and options';
