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
    estimated       boolean NOT NULL DEFAULT false,
    job_id          bigint,
    job             text,
    tag             text
);
CREATE INDEX usage_ts ON llm.usage USING brin (ts);
-- a job's calls, for what it cost (llm.job_status)
CREATE INDEX usage_job ON llm.usage (job_id) WHERE job_id IS NOT NULL;
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
COMMENT ON COLUMN llm.usage.job_id IS 'The job (llm.job.id) whose queue item the call answered; NULL outside jobs';
COMMENT ON COLUMN llm.usage.job IS 'The name of that job when the call was recorded';
COMMENT ON COLUMN llm.usage.tag IS 'The call''s option tag: a label of the caller''s (a job''s items carry the job''s options), for usage_summary and cost_report by tag';
ALTER TABLE llm.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_usage ON llm.usage FOR SELECT
    USING (role_oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

CREATE FUNCTION llm.prune_usage(older_than interval DEFAULT '13 months') RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (DELETE FROM llm.usage WHERE ts < now() - older_than RETURNING 1)
    SELECT count(*) FROM d;
$$;
COMMENT ON FUNCTION llm.prune_usage(interval) IS 'Delete usage rows older than the given age';

-- The usage rows the reader may see (llm._reader: its own and those of the
-- roles whose privileges it has; every role's for administrators), with
-- the role's name.  security_barrier: a reader's own conditions see no row
-- the view leaves out.
CREATE VIEW llm.usage_log WITH (security_barrier) AS
    SELECT u.ts, coalesce(r.rolname::text, u.role_oid::text) AS role, u.mode, u.task, u.outcome,
           u.provider, u.model, u.upstream_model, u.job, u.tag, u.http_status, u.attempts, u.fallback,
           u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens,
           u.reasoning_tokens, u.inputs, u.cost_usd, u.estimated, u.latency_ms, u.ttft_ms,
           u.finish_reason, u.service_tier, u.error, u.role_oid, u.job_id
    FROM llm.usage u
    CROSS JOIN llm._reader v
    LEFT JOIN pg_catalog.pg_roles r ON r.oid = u.role_oid
    WHERE v.all_roles OR u.role_oid = ANY (v.roles);
COMMENT ON VIEW llm.usage_log IS 'llm.usage with the name of each call''s role (its OID when the role is gone): the rows of the reader and of the roles whose privileges it has, every role''s for administrators';

CREATE VIEW llm.usage_summary WITH (security_barrier) AS
    SELECT CASE WHEN GROUPING(u.mode) = 1 THEN 'total'
                WHEN GROUPING(u.model) = 1 THEN 'mode'
                ELSE 'model' END AS level,
           u.mode, u.task, u.provider, u.model, u.upstream_model,
           -- a call is one row that is not a retry: an attempt that failed
           -- and was followed by another is paid (tokens, cost) and
           -- counted apart, as llm.cost_report and llm.budgets count calls
           count(*) FILTER (WHERE u.outcome <> 'retry') AS calls,
           count(*) FILTER (WHERE u.outcome IN ('ok', 'cache')) AS ok,
           count(*) FILTER (WHERE u.outcome NOT IN ('ok', 'cache', 'retry')) AS not_ok,
           count(*) FILTER (WHERE u.outcome = 'retry') AS retries,
           count(*) FILTER (WHERE u.outcome = 'cache') AS from_cache,
           count(*) FILTER (WHERE u.fallback) AS served_by_fallback,
           coalesce(sum(u.input_tokens), 0) AS input_tokens,
           coalesce(sum(u.output_tokens), 0) AS output_tokens,
           coalesce(sum(u.inputs), 0) AS embedded_inputs,
           round(sum(u.cost_usd), 6) AS cost_usd,
           round(avg(u.latency_ms)) AS avg_latency_ms,
           round(avg(u.ttft_ms)) AS avg_ttft_ms,
           min(u.ts) AS first_call, max(u.ts) AS last_call
    FROM llm.usage_log u
    GROUP BY GROUPING SETS ((u.mode, u.task, u.provider, u.model, u.upstream_model), (u.mode), ())
    ORDER BY GROUPING(u.mode), u.mode, GROUPING(u.model) DESC, u.task, u.provider NULLS FIRST, u.model;
COMMENT ON VIEW llm.usage_summary IS 'The migration inventory over the calls the reader may see (llm.usage_log): per mode (level mode) and per task, provider and model of each mode (level model: a NULL provider is a call that failed before a provider was chosen), with calls (the retries of a call counted apart, in retries: their tokens and cost are in the sums), tokens, embedded inputs and cost, and the total (level total); llm.usage_summary(by => ''job'' or ''tag'') groups by job or tag';

CREATE FUNCTION llm.usage_summary(by text, since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS TABLE (level text, job text, tag text, mode text, task text, provider text, model text,
               upstream_model text, calls bigint, ok bigint, not_ok bigint, retries bigint, from_cache bigint,
               served_by_fallback bigint, input_tokens bigint, output_tokens bigint,
               embedded_inputs bigint, cost_usd numeric, avg_latency_ms numeric, avg_ttft_ms numeric,
               first_call timestamptz, last_call timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w text;
    by_job boolean := false;
    by_tag boolean := false;
    label text := '';
BEGIN
    -- what to group by: job, tag or both, each once
    FOREACH w IN ARRAY coalesce(regexp_split_to_array(lower(btrim(usage_summary.by)), '\s*(,|\s)\s*'), '{}') LOOP
        IF w = 'job' THEN
            by_job := true;
        ELSIF w = 'tag' THEN
            by_tag := true;
        ELSE
            RAISE EXCEPTION 'cannot group by "%"', w
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Group by job, by tag, or by both: by => ''job'', ''tag'' or ''job, tag''.';
        END IF;
    END LOOP;
    label := concat_ws(', ', CASE WHEN by_job THEN 'job' END, CASE WHEN by_tag THEN 'tag' END);
    IF since > until THEN
        RAISE EXCEPTION 'since (%) is after until (%)', since, until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT x.level, x.job, x.tag, x.mode, x.task, x.provider, x.model, x.upstream_model, x.calls,
           x.ok, x.not_ok, x.retries, x.from_cache, x.served_by_fallback, x.input_tokens, x.output_tokens,
           x.embedded_inputs, x.cost_usd, x.avg_latency_ms, x.avg_ttft_ms, x.first_call, x.last_call
    FROM (
        SELECT CASE WHEN GROUPING(s.gj, s.gt) = 3 THEN 'total'
                    WHEN GROUPING(s.mode) = 1 THEN label
                    ELSE 'model' END AS level,
               s.gj AS job, s.gt AS tag, s.mode, s.task, s.provider, s.model, s.upstream_model,
               count(*) FILTER (WHERE s.outcome <> 'retry') AS calls,
               count(*) FILTER (WHERE s.outcome IN ('ok', 'cache')) AS ok,
               count(*) FILTER (WHERE s.outcome NOT IN ('ok', 'cache', 'retry')) AS not_ok,
               count(*) FILTER (WHERE s.outcome = 'retry') AS retries,
               count(*) FILTER (WHERE s.outcome = 'cache') AS from_cache,
               count(*) FILTER (WHERE s.fallback) AS served_by_fallback,
               coalesce(sum(s.input_tokens), 0) AS input_tokens,
               coalesce(sum(s.output_tokens), 0) AS output_tokens,
               coalesce(sum(s.inputs), 0) AS embedded_inputs,
               round(sum(s.cost_usd), 6) AS cost_usd,
               round(avg(s.latency_ms)) AS avg_latency_ms,
               round(avg(s.ttft_ms)) AS avg_ttft_ms,
               min(s.ts) AS first_call, max(s.ts) AS last_call,
               GROUPING(s.gj, s.gt) AS gs, GROUPING(s.mode) AS gm
        FROM (SELECT u.*, CASE WHEN by_job THEN u.job END AS gj, CASE WHEN by_tag THEN u.tag END AS gt
              FROM llm.usage_log u
              WHERE (usage_summary.since IS NULL OR u.ts >= usage_summary.since)
                AND (usage_summary.until IS NULL OR u.ts < usage_summary.until)) s
        GROUP BY GROUPING SETS ((s.gj, s.gt, s.mode, s.task, s.provider, s.model, s.upstream_model),
                                (s.gj, s.gt), ())) x
    WHERE x.level <> ''
    ORDER BY x.gs, x.job NULLS LAST, x.tag NULLS LAST, x.gm DESC, x.mode, x.task, x.provider NULLS FIRST, x.model;
END;
$$;
COMMENT ON FUNCTION llm.usage_summary(text, timestamptz, timestamptz) IS 'llm.usage_summary by job, by tag or by both (by => ''job'', ''tag'' or ''job, tag''), optionally over a period: per group and mode, task, provider and model (level model), per group (level job, tag or job, tag: a NULL job or tag is the calls outside jobs or without a tag) and the total';


-- Savings against a baseline.  Every call is priced three ways with the
-- routes' prices of llm.model: what it paid (cost_usd), what its tokens
-- cost at the route that served it at realtime prices, and what they
-- cost on the baseline route of its model at realtime prices.  Then
--   saved    = baseline - paid
--   cache    = the serving route's price of a reply served by the cache
--   batch    = the serving route's price - paid, through a batch API (or
--              the flex tier, billed at batch rates)
--   provider = the rest: the baseline's price - the serving route's
-- so that the three add up to what was saved.  Prices are linear in the
-- tokens, so calls are priced in groups (model, provider, kind, job, tag).
CREATE FUNCTION llm.cost_report(baseline text DEFAULT NULL,
                                since timestamptz DEFAULT date_trunc('month', now()),
                                until timestamptz DEFAULT now(),
                                by text DEFAULT NULL)
RETURNS TABLE (model text, served_by text, baseline_provider text, calls bigint,
               input_tokens bigint, output_tokens bigint, paid_usd numeric, baseline_usd numeric,
               saved_usd numeric, saved_pct numeric, saved_provider_usd numeric,
               saved_batch_usd numeric, saved_cache_usd numeric, batch_calls bigint,
               cache_calls bigint, unpriced_calls bigint, unpriced text, job text, tag text,
               level text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w text;
    by_job boolean := false;
    by_tag boolean := false;
    label text := '';
    bl text := cost_report.baseline;
BEGIN
    -- what to group by: job, tag or both, each once
    FOREACH w IN ARRAY coalesce(regexp_split_to_array(lower(btrim(cost_report.by)), '\s*(,|\s)\s*'), '{}') LOOP
        IF w = 'job' THEN
            by_job := true;
        ELSIF w = 'tag' THEN
            by_tag := true;
        ELSE
            RAISE EXCEPTION 'cannot group by "%"', w
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Group by job, by tag, or by both: by => ''job'', ''tag'' or ''job, tag''.';
        END IF;
    END LOOP;
    label := concat_ws(', ', CASE WHEN by_job THEN 'job' END, CASE WHEN by_tag THEN 'tag' END);
    IF since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'since and until must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF since > until THEN
        RAISE EXCEPTION 'since (%) is after until (%)', since, until
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF bl IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM llm.model m WHERE m.provider = bl) THEN
            RAISE EXCEPTION 'no model is routed to provider "%"', bl
                USING ERRCODE = 'undefined_object',
                      HINT = coalesce('The baseline is a provider whose prices of the same models the calls are compared with: '
                                      || (SELECT string_agg(DISTINCT m.provider, ', ') FROM llm.model m
                                          WHERE m.input_usd_per_mtok IS NOT NULL) || '.',
                                      'Give the models a route with prices on the provider to compare with: llm.add_model(name, provider, upstream_model, input_usd_per_mtok => ..., output_usd_per_mtok => ...).');
        END IF;
        IF NOT EXISTS (SELECT 1 FROM llm.model m WHERE m.provider = bl AND m.input_usd_per_mtok IS NOT NULL) THEN
            RAISE EXCEPTION 'provider "%" has no prices to compare with', bl
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give its routes their prices: llm.add_model(name, provider, upstream_model, input_usd_per_mtok => ..., output_usd_per_mtok => ...).';
        END IF;
    END IF;

    RETURN QUERY
    WITH grp AS (
        -- the calls in groups: a group's tokens are priced at once
        SELECT row_number() OVER () AS gid, y.*
        FROM (SELECT u.model, u.provider, u.job, u.tag,
                     CASE WHEN u.outcome = 'cache' THEN 'cache'
                          WHEN u.mode = 'batch_api' OR u.service_tier = 'flex' THEN 'batch'
                          ELSE 'realtime' END AS kind,
                     -- paid at an unknown price: tokens on a route without prices
                     (u.cost_usd IS NULL AND u.outcome <> 'cache'
                      AND coalesce(u.input_tokens, 0) + coalesce(u.output_tokens, 0) > 0) AS unpriced,
                     count(*) FILTER (WHERE u.outcome <> 'retry') AS calls,
                     coalesce(sum(u.input_tokens), 0) AS tin,
                     coalesce(sum(u.cached_input_tokens), 0) AS tcached,
                     coalesce(sum(u.cache_write_tokens), 0) AS twrite,
                     coalesce(sum(u.output_tokens), 0) AS tout,
                     sum(u.cost_usd) AS paid
              FROM llm.usage_log u
              WHERE u.ts >= cost_report.since AND u.ts < cost_report.until
              GROUP BY 1, 2, 3, 4, 5, 6) y),
    -- each group priced on each route of its model that has prices for it
    there AS (
        SELECT x.gid, x.model, m.provider AS route,
               (greatest(x.tin - x.tcached - x.twrite, 0) * m.input_usd_per_mtok
                + x.tcached * coalesce(m.cached_input_usd_per_mtok, m.input_usd_per_mtok)
                + x.twrite * m.input_usd_per_mtok * 1.25
                + x.tout * coalesce(m.output_usd_per_mtok, 0)) / 1e6 AS usd
        FROM grp x
        JOIN llm.model m ON m.name = x.model AND m.input_usd_per_mtok IS NOT NULL
             -- an embedding model (no output tokens) needs an input price only
             AND (m.output_usd_per_mtok IS NOT NULL OR x.tout = 0)),
    -- the baseline of each model: the given provider's route, if it
    -- prices every group of the model; else the dearest route that does
    base AS (
        SELECT DISTINCT ON (t.model) t.model, t.route
        FROM there t
        WHERE bl IS NULL OR t.route = bl
        GROUP BY t.model, t.route
        HAVING count(*) = (SELECT count(*) FROM grp x WHERE x.model = t.model)
        ORDER BY t.model, sum(t.usd) DESC, t.route),
    lines AS (
        SELECT p.*, p.base - p.paid AS saved,
               CASE WHEN p.kind = 'cache' THEN p.rt ELSE 0 END AS s_cache,
               CASE WHEN p.kind = 'batch' THEN p.rt - p.paid ELSE 0 END AS s_batch
        FROM (SELECT x.gid, x.model, x.provider, x.kind, x.calls, x.tin, x.tout, b.route AS base_route,
                     CASE WHEN by_job THEN x.job END AS gj, CASE WHEN by_tag THEN x.tag END AS gt,
                     x.unpriced OR r.rt IS NULL AS unpriced,
                     CASE WHEN x.kind = 'cache' THEN 0 ELSE coalesce(x.paid, 0) END AS paid,
                     coalesce(bt.usd, r.rt) AS base, r.rt
              FROM grp x
              LEFT JOIN base b ON b.model = x.model
              LEFT JOIN there st ON st.gid = x.gid AND st.route = x.provider
              LEFT JOIN there bt ON bt.gid = x.gid AND bt.route = b.route
              -- the serving route's realtime price; a route gone or
              -- without prices now: what was paid
              CROSS JOIN LATERAL (
                  SELECT CASE WHEN x.tin + x.tout = 0 THEN 0
                              ELSE coalesce(st.usd, CASE WHEN x.kind <> 'cache' THEN x.paid END, bt.usd)
                         END AS rt) r) p),
    rep AS (
        SELECT CASE WHEN GROUPING(l.gj, l.gt) = 3 THEN 'total'
                    WHEN GROUPING(l.model) = 1 THEN label
                    ELSE 'model' END AS lvl,
               GROUPING(l.gj, l.gt) AS gs, GROUPING(l.model) AS gm,
               l.gj, l.gt, l.model AS mdl,
               string_agg(DISTINCT l.provider, ', ') AS served,
               CASE WHEN count(DISTINCT l.base_route) = 1 AND count(*) = count(l.base_route)
                    THEN min(l.base_route) END AS base_route,
               coalesce(sum(l.calls), 0)::bigint AS n, coalesce(sum(l.tin), 0)::bigint AS tin,
               coalesce(sum(l.tout), 0)::bigint AS tout,
               sum(l.paid) FILTER (WHERE NOT l.unpriced) AS paid,
               sum(l.base) FILTER (WHERE NOT l.unpriced) AS base,
               sum(l.saved) FILTER (WHERE NOT l.unpriced) AS saved,
               sum(l.s_cache) FILTER (WHERE NOT l.unpriced) AS s_cache,
               sum(l.s_batch) FILTER (WHERE NOT l.unpriced) AS s_batch,
               coalesce(sum(l.calls) FILTER (WHERE l.kind = 'batch'), 0)::bigint AS n_batch,
               coalesce(sum(l.calls) FILTER (WHERE l.kind = 'cache'), 0)::bigint AS n_cache,
               coalesce(sum(l.calls) FILTER (WHERE l.unpriced), 0)::bigint AS n_unpriced
        FROM lines l
        GROUP BY GROUPING SETS ((l.gj, l.gt, l.model), (l.gj, l.gt), ())),
    -- the unpriced calls listed: which model on which provider, how many
    up AS (
        SELECT l.gj, l.gt, l.model AS mdl, l.provider AS prov, sum(l.calls) AS n
        FROM lines l WHERE l.unpriced
        GROUP BY 1, 2, 3, 4)
    SELECT r.mdl, r.served,
           CASE WHEN r.lvl = 'model' THEN r.base_route ELSE coalesce(bl, r.base_route) END,
           r.n, r.tin, r.tout,
           round(r.paid, 6), round(r.base, 6), round(r.saved, 6),
           CASE WHEN r.base > 0 THEN round(100 * r.saved / r.base, 1) END,
           round(r.saved - r.s_cache - r.s_batch, 6), round(r.s_batch, 6), round(r.s_cache, 6),
           r.n_batch, r.n_cache, r.n_unpriced,
           (SELECT string_agg(CASE WHEN r.lvl = 'model' THEN '' ELSE u.mdl || ' on ' END
                              || coalesce(u.prov, '?') || ' (' || u.n || CASE WHEN u.n = 1 THEN ' call)' ELSE ' calls)' END,
                              ', ' ORDER BY u.mdl, u.prov)
            FROM up u
            WHERE (r.gs = 3 OR (u.gj IS NOT DISTINCT FROM r.gj AND u.gt IS NOT DISTINCT FROM r.gt))
              AND (r.gm = 1 OR u.mdl = r.mdl)),
           r.gj, r.gt, r.lvl
    FROM rep r
    -- grouped by nothing, the group of every call is the total already
    WHERE r.lvl <> ''
    ORDER BY r.gs, r.gj NULLS LAST, r.gt NULLS LAST, r.gm, r.mdl;
END;
$$;
COMMENT ON FUNCTION llm.cost_report(text, timestamptz, timestamptz, text) IS 'What the calls the reader may see (llm.usage_log) paid in a period, against what their tokens cost on the baseline (a provider''s route of each model at realtime prices; default: the model''s dearest priced route; a model without one is compared with the route that served it), per model and in total (model NULL, level total): paid_usd, baseline_usd, saved_usd and saved_pct, the saving split by source (a cheaper provider, batch prices, the response cache), and the calls on routes without prices counted and listed (unpriced_calls, unpriced), not priced; by => ''job'', ''tag'' or ''job, tag'' adds a total per group';

CREATE FUNCTION llm.usage_buffer_status(OUT pending integer, OUT dropped bigint, OUT waited bigint)
AS 'MODULE_PATHNAME', 'pg_llm_usage_buffer_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.usage_buffer_status() IS 'Usage records not yet in llm.usage (waiting in shared memory for their database''s writer, kept by the process that made them, or being written in a transaction not yet committed: 0 once every call so far is in llm.usage), records dropped (only by calls cleaned up after an error that found no room for 10 s), and records that had to wait for room';

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
           count(u.ts) FILTER (WHERE u.outcome NOT IN ('retry', 'cache')) AS calls
    FROM llm.budget b
    LEFT JOIN llm.usage u ON u.role_oid = b.role_oid
         AND u.ts >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    GROUP BY b.role_oid, b.usd_per_month, b.calls_per_month, b.max_queued;
COMMENT ON VIEW llm.budgets IS 'Each budget and what its role spent this month (written usage rows)';
