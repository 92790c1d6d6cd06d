-- Usage and cost: one compact row per call, written by the database's
-- worker from shared memory, so a ROLLBACK of the calling transaction does
-- not lose it.

CREATE TABLE llm.usage (
    ts              timestamptz NOT NULL,
    role_oid        oid NOT NULL,
    mode            text NOT NULL,
    outcome         text NOT NULL,
    provider        text,
    model           text NOT NULL,
    upstream_model  text,
    http_status     smallint,
    attempts        smallint NOT NULL,
    fallback        boolean NOT NULL,
    input_tokens    integer,
    output_tokens   integer,
    latency_ms      integer NOT NULL,
    ttft_ms         integer,
    cost_usd        numeric,
    task            text NOT NULL DEFAULT 'chat',
    inputs          integer,
    error           text,
    cached_input_tokens integer,
    cache_write_tokens integer,
    reasoning_tokens integer,
    finish_reason   text,
    service_tier    text,
    estimated       boolean NOT NULL DEFAULT false
);
CREATE INDEX usage_ts ON llm.usage USING brin (ts);
COMMENT ON TABLE llm.usage IS 'One row per call: mode (sync, stream, many, queue, batch_api), task (chat, embed), provider, model, outcome, HTTP status, attempts, fallback, tokens, latency, time to first chunk, cost; each role sees its own rows';
COMMENT ON COLUMN llm.usage.task IS 'What the request asked for: chat (a reply) or embed (embeddings)';
COMMENT ON COLUMN llm.usage.inputs IS 'The number of inputs of an embedding request (NULL for chat)';
COMMENT ON COLUMN llm.usage.error IS 'Why a call that did not succeed failed (the error''s message, cut at 127 bytes); NULL for a call that succeeded';
COMMENT ON COLUMN llm.usage.outcome IS 'ok, error, cancelled, retry (the item goes back to the queue), invalid (paid, but the answer broke its schema), refused (the provider refused the request or filtered its reply), or cache (served by the response cache, or by an identical call in flight: no request, no cost)';
COMMENT ON COLUMN llm.usage.input_tokens IS 'Every input token the provider counted, those read from and written to its prompt cache included';
COMMENT ON COLUMN llm.usage.output_tokens IS 'Every output token, reasoning tokens included';
COMMENT ON COLUMN llm.usage.cached_input_tokens IS 'Of the input tokens, those read from the provider''s prompt cache (priced at the route''s cached_input_usd_per_mtok)';
COMMENT ON COLUMN llm.usage.cache_write_tokens IS 'Of the input tokens, those written to the provider''s prompt cache (Anthropic bills them at 1.25 times the input price, 2 times for a one-hour cache)';
COMMENT ON COLUMN llm.usage.reasoning_tokens IS 'Of the output tokens, those the model spent reasoning';
COMMENT ON COLUMN llm.usage.finish_reason IS 'How the reply ended, in the provider''s own word (stop, length, content_filter, tool_calls; end_turn, max_tokens, stop_sequence, tool_use, pause_turn, refusal)';
COMMENT ON COLUMN llm.usage.service_tier IS 'The service tier that served the call, as the provider reported it (default, flex, priority; standard, batch)';
COMMENT ON COLUMN llm.usage.cost_usd IS 'What the call cost at its route''s prices; NULL only on a route without prices';
COMMENT ON COLUMN llm.usage.estimated IS 'The tokens and cost are pg_llm''s count, not the provider''s: the reply had no usage (or numbers pg_llm does not bill by), or the stream was cut short; the input as estimated when the call was reserved, the output counted from the text received';
ALTER TABLE llm.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_usage ON llm.usage FOR SELECT
    USING (role_oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

CREATE FUNCTION llm.prune_usage(older_than interval DEFAULT '13 months') RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (DELETE FROM llm.usage WHERE ts < now() - older_than RETURNING 1)
    SELECT count(*) FROM d;
$$;
COMMENT ON FUNCTION llm.prune_usage(interval) IS 'Delete usage rows older than the given age';

CREATE VIEW llm.usage_summary AS
    SELECT u.mode, u.task, u.provider, u.model, u.upstream_model,
           count(*) AS calls,
           count(*) FILTER (WHERE u.outcome = 'ok') AS ok,
           count(*) FILTER (WHERE u.outcome <> 'ok') AS not_ok,
           count(*) FILTER (WHERE u.fallback) AS served_by_fallback,
           coalesce(sum(u.input_tokens), 0) AS input_tokens,
           coalesce(sum(u.output_tokens), 0) AS output_tokens,
           coalesce(sum(u.inputs), 0) AS embedded_inputs,
           round(sum(u.cost_usd), 6) AS cost_usd,
           round(avg(u.latency_ms)) AS avg_latency_ms,
           round(avg(u.ttft_ms)) AS avg_ttft_ms,
           min(u.ts) AS first_call, max(u.ts) AS last_call
    FROM llm.usage u
    GROUP BY GROUPING SETS ((u.mode, u.task, u.provider, u.model, u.upstream_model), (u.mode), ())
    ORDER BY u.mode NULLS LAST, u.task NULLS FIRST, u.provider NULLS FIRST, u.model NULLS FIRST;
COMMENT ON VIEW llm.usage_summary IS 'The migration inventory: calls by mode, and per task (chat or embed), provider and model, with tokens, embedded inputs and cost; rows with NULL provider are subtotals per mode, and the last row the total';

CREATE FUNCTION llm.cost_report(since timestamptz DEFAULT date_trunc('month', now()),
                                until timestamptz DEFAULT now())
RETURNS TABLE (model text, served_by text, calls bigint, input_tokens bigint,
               output_tokens bigint, cost_usd numeric, priced_on text,
               priced_upstream text, cost_there_usd numeric, savings_pct numeric,
               batch_calls bigint, batch_cost_usd numeric, cost_there_batch_usd numeric,
               cache_calls bigint, cache_saved_usd numeric)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH used AS (
        SELECT u.model, string_agg(DISTINCT u.provider, ', ') AS served_by,
               count(*) AS calls,
               coalesce(sum(u.input_tokens), 0) AS input_tokens,
               coalesce(sum(u.output_tokens), 0) AS output_tokens,
               coalesce(sum(u.cached_input_tokens), 0) AS cached_input_tokens,
               coalesce(sum(u.cache_write_tokens), 0) AS cache_write_tokens,
               sum(u.cost_usd) AS cost_usd,
               count(*) FILTER (WHERE u.mode = 'batch_api') AS batch_calls,
               sum(u.cost_usd) FILTER (WHERE u.mode = 'batch_api') AS batch_cost_usd
        FROM llm.usage u
        WHERE u.ts >= since AND u.ts < until AND u.outcome NOT IN ('retry', 'cache')
        GROUP BY u.model),
    -- replies served by the response cache: unpaid, worth what their
    -- tokens cost on the route that first answered them
    hits AS (
        SELECT u.model, count(*) AS calls,
               sum(coalesce(u.input_tokens, 0) * m.input_usd_per_mtok / 1e6
                   + coalesce(u.output_tokens, 0) * coalesce(m.output_usd_per_mtok, 0) / 1e6) AS saved
        FROM llm.usage u
        LEFT JOIN llm.model m ON m.name = u.model AND m.provider = u.provider
        WHERE u.ts >= since AND u.ts < until AND u.outcome = 'cache'
        GROUP BY u.model),
    models AS (
        SELECT used.* FROM used
        UNION ALL
        SELECT h.model, NULL, 0, 0, 0, 0, 0, 0, 0, NULL FROM hits h
        WHERE NOT EXISTS (SELECT 1 FROM used WHERE used.model = h.model)),
    priced AS (
        SELECT used.*, m.provider, m.upstream_model, m.batch_price_factor,
               greatest(used.input_tokens - used.cached_input_tokens - used.cache_write_tokens, 0)
                       * m.input_usd_per_mtok / 1e6
                   + used.cached_input_tokens * coalesce(m.cached_input_usd_per_mtok, m.input_usd_per_mtok) / 1e6
                   + used.cache_write_tokens * m.input_usd_per_mtok * 1.25 / 1e6
                   + used.output_tokens * coalesce(m.output_usd_per_mtok, 0) / 1e6 AS there
        FROM models used
        LEFT JOIN llm.model m ON m.name = used.model
             AND m.input_usd_per_mtok IS NOT NULL
             -- an embedding model (no output tokens) needs an input price only
             AND (m.output_usd_per_mtok IS NOT NULL OR used.output_tokens = 0))
    SELECT p.model, p.served_by, p.calls, p.input_tokens, p.output_tokens,
           round(p.cost_usd, 6), p.provider, p.upstream_model, round(p.there, 6),
           CASE WHEN p.cost_usd > 0 THEN round(100 * (p.cost_usd - p.there) / p.cost_usd, 1) END,
           p.batch_calls, round(p.batch_cost_usd, 6), round(p.there * p.batch_price_factor, 6),
           coalesce(h.calls, 0), round(h.saved, 6)
    FROM priced p LEFT JOIN hits h ON h.model = p.model
    ORDER BY p.model, 9 NULLS LAST;
$$;
COMMENT ON FUNCTION llm.cost_report(timestamptz, timestamptz) IS 'The tokens each model used in a period, priced on every provider that serves the model (its llm.model rows with prices), with the savings in percent against what was paid; batch_calls and batch_cost_usd are the part sent through batch APIs, cost_there_batch_usd what all the tokens would cost there through its batch API; cache_calls the calls the response cache served, and cache_saved_usd what they would have cost on the route that first answered them';

CREATE FUNCTION llm.usage_buffer_status(OUT pending integer, OUT dropped bigint, OUT waited bigint)
AS 'MODULE_PATHNAME', 'pg_llm_usage_buffer_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.usage_buffer_status() IS 'Usage records waiting in shared memory for their database''s writer, records dropped (only by calls cleaned up after an error that found no room for 10 s), and records that had to wait for room';

-- Budgets: per role and calendar month (UTC), enforced before each call.

CREATE TABLE llm.budget (
    role_oid        oid PRIMARY KEY,
    usd_per_month   numeric CHECK (usd_per_month >= 0),
    calls_per_month bigint CHECK (calls_per_month >= 0),
    max_queued      bigint CHECK (max_queued >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE llm.budget IS 'Monthly spending and call limits per role, and a cap on its queued items';
SELECT pg_catalog.pg_extension_config_dump('llm.budget', '');
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON llm.budget FOR EACH STATEMENT EXECUTE FUNCTION llm._config_changed();

CREATE FUNCTION llm.set_budget(role regrole, usd_per_month numeric, calls_per_month bigint DEFAULT NULL,
                               max_queued bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF usd_per_month < 0 OR calls_per_month < 0 OR max_queued < 0 THEN
        RAISE EXCEPTION 'a budget cannot be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF usd_per_month IS NULL AND calls_per_month IS NULL AND max_queued IS NULL THEN
        DELETE FROM llm.budget b WHERE b.role_oid = role;
        RETURN;
    END IF;
    INSERT INTO llm.budget AS b (role_oid, usd_per_month, calls_per_month, max_queued)
    VALUES (role, usd_per_month, calls_per_month, max_queued)
    ON CONFLICT (role_oid) DO UPDATE
        SET usd_per_month = EXCLUDED.usd_per_month,
            calls_per_month = EXCLUDED.calls_per_month,
            max_queued = EXCLUDED.max_queued,
            updated_at = now();
END;
$$;
COMMENT ON FUNCTION llm.set_budget(regrole, numeric, bigint, bigint) IS 'Set a role''s monthly limit in USD (and optionally in calls) and a cap on its queued items; NULL for all removes them. Calls over budget fail before they are sent; a role with a limit in USD cannot call models without prices';

CREATE VIEW llm.budgets AS
    SELECT b.role_oid::regrole AS role, b.usd_per_month, b.calls_per_month, b.max_queued,
           coalesce(round(sum(u.cost_usd), 6), 0) AS spent_usd,
           count(u.ts) FILTER (WHERE u.outcome <> 'retry') AS calls
    FROM llm.budget b
    LEFT JOIN llm.usage u ON u.role_oid = b.role_oid
         AND u.ts >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    GROUP BY b.role_oid, b.usd_per_month, b.calls_per_month, b.max_queued;
COMMENT ON VIEW llm.budgets IS 'Each budget and what its role spent this month (written usage rows)';
