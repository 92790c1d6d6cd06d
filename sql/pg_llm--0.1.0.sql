-- pg_llm 0.1.0: the LLM gateway inside PostgreSQL
\echo Use "CREATE EXTENSION pg_llm" to load this file. \quit

-- Configuration is readable and writable by the extension owner only; an
-- administrator grants what analysts need (see the README, "Privileges").
REVOKE ALL ON SCHEMA llm FROM PUBLIC;

CREATE TABLE llm.provider (
    name        text PRIMARY KEY
                CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    protocol    text NOT NULL CHECK (protocol IN ('openai', 'anthropic')),
    base_url    text NOT NULL CHECK (base_url ~* '^https?://[^/]'),
    enabled     boolean NOT NULL DEFAULT true,
    priority    integer NOT NULL DEFAULT 100,
    api_key_env text,
    has_api_key boolean NOT NULL DEFAULT false,
    options     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE llm.provider IS 'LLM endpoints pg_llm can call; keys are kept apart, in a table only the extension owner can read';

CREATE TABLE llm._provider_secret (
    provider    text PRIMARY KEY REFERENCES llm.provider (name)
                ON UPDATE CASCADE ON DELETE CASCADE,
    api_key     text NOT NULL
);
COMMENT ON TABLE llm._provider_secret IS 'API keys of providers; never granted to anyone';

CREATE TABLE llm.model (
    name                text NOT NULL CHECK (name <> ''),
    provider            text NOT NULL REFERENCES llm.provider (name)
                        ON UPDATE CASCADE ON DELETE CASCADE,
    upstream_model      text NOT NULL CHECK (upstream_model <> ''),
    priority            integer NOT NULL DEFAULT 100,
    input_usd_per_mtok  numeric CHECK (input_usd_per_mtok >= 0),
    output_usd_per_mtok numeric CHECK (output_usd_per_mtok >= 0),
    PRIMARY KEY (name, provider)
);
COMMENT ON TABLE llm.model IS 'Model names SQL callers use, where each goes, and its price; several rows with one name form its fallback chain';

CREATE TABLE llm._setting (
    key   text PRIMARY KEY,
    value text
);
COMMENT ON TABLE llm._setting IS 'Cluster-wide pg_llm state, such as the primary provider';

SELECT pg_catalog.pg_extension_config_dump('llm.provider', '');
SELECT pg_catalog.pg_extension_config_dump('llm._provider_secret', '');
SELECT pg_catalog.pg_extension_config_dump('llm.model', '');
SELECT pg_catalog.pg_extension_config_dump('llm._setting', '');

-- Every backend caches the configuration; these triggers empty the caches
-- at commit so a change reaches all sessions and the worker at once.
CREATE FUNCTION llm._config_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'pg_llm_config_changed' LANGUAGE C;
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON llm.provider FOR EACH STATEMENT EXECUTE FUNCTION llm._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON llm._provider_secret FOR EACH STATEMENT EXECUTE FUNCTION llm._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON llm.model FOR EACH STATEMENT EXECUTE FUNCTION llm._config_changed();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON llm._setting FOR EACH STATEMENT EXECUTE FUNCTION llm._config_changed();

-- Check provider options: known keys with the right types only.
CREATE FUNCTION llm._check_provider_options(options jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    v jsonb;
    ints constant text[] := ARRAY['connect_timeout_ms', 'timeout_ms', 'low_speed_time',
        'low_speed_limit', 'stream_idle_timeout', 'max_retries', 'default_max_tokens'];
BEGIN
    IF options IS NULL THEN
        RETURN '{}';
    END IF;
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'provider options must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(options) LOOP
        IF k = ANY (ints) THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric)
               OR v::numeric < 0 OR v::numeric > 2147483647 THEN
                RAISE EXCEPTION 'provider option "%" must be a whole number from 0 to 2147483647', k
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'max_tokens_param' THEN
            IF v NOT IN ('"max_tokens"', '"max_completion_tokens"') THEN
                RAISE EXCEPTION 'provider option "max_tokens_param" must be "max_tokens" or "max_completion_tokens"'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'anthropic_version' THEN
            IF jsonb_typeof(v) <> 'string' OR v #>> '{}' !~ '^[0-9A-Za-z.-]+$' THEN
                RAISE EXCEPTION 'provider option "anthropic_version" must be a version string such as "2023-06-01"'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'stream_usage' THEN
            IF jsonb_typeof(v) <> 'boolean' THEN
                RAISE EXCEPTION 'provider option "stream_usage" must be true or false'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'headers' THEN
            IF jsonb_typeof(v) <> 'object' OR EXISTS (
                   SELECT 1 FROM jsonb_each(v) h
                   WHERE jsonb_typeof(h.value) <> 'string'
                      OR h.key !~ '^[A-Za-z0-9-]+$'
                      OR h.value #>> '{}' ~ '[\r\n]'
                      OR lower(h.key) IN ('authorization', 'x-api-key', 'content-length', 'host')) THEN
                RAISE EXCEPTION 'provider option "headers" must be an object of header names and string values'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Authorization, x-api-key, Host and Content-Length are set by pg_llm; give the key with api_key or api_key_env.';
            END IF;
        ELSE
            RAISE EXCEPTION 'unknown provider option "%"', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known options: connect_timeout_ms, timeout_ms, low_speed_time, low_speed_limit, stream_idle_timeout, max_retries, default_max_tokens, max_tokens_param, anthropic_version, stream_usage, headers.';
        END IF;
    END LOOP;
    RETURN options;
END;
$$;

CREATE FUNCTION llm._check_base_url(base_url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF base_url IS NULL OR base_url !~* '^https?://[^/\s]+' THEN
        RAISE EXCEPTION 'base_url must be an http or https URL'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The base_url given was %L.', base_url),
                  HINT = 'Include the version prefix, such as https://api.openai.com/v1.';
    END IF;
    RETURN rtrim(base_url, '/');
END;
$$;

CREATE FUNCTION llm._check_protocol(protocol text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF protocol IS NULL OR protocol NOT IN ('openai', 'anthropic') THEN
        RAISE EXCEPTION 'protocol must be "openai" or "anthropic"'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "openai" for any OpenAI-compatible server (DeepSeek, vLLM, Ollama, relays).';
    END IF;
    RETURN protocol;
END;
$$;

CREATE FUNCTION llm._provider_must_exist(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM llm.provider p WHERE p.name = _provider_must_exist.name) THEN
        RAISE EXCEPTION 'provider "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM llm.provider.';
    END IF;
END;
$$;

CREATE FUNCTION llm.create_provider(
    name text,
    protocol text,
    base_url text,
    api_key text DEFAULT NULL,
    api_key_env text DEFAULT NULL,
    options jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'invalid provider name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 63 letters, digits, "_", "." or "-".';
    END IF;
    IF EXISTS (SELECT 1 FROM llm.provider p WHERE p.name = create_provider.name) THEN
        RAISE EXCEPTION 'provider "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Change it with llm.alter_provider().';
    END IF;
    IF api_key IS NOT NULL AND api_key_env IS NOT NULL THEN
        RAISE EXCEPTION 'give api_key or api_key_env, not both'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO llm.provider (name, protocol, base_url, api_key_env, has_api_key, options)
    VALUES (name, llm._check_protocol(protocol), llm._check_base_url(base_url),
            nullif(api_key_env, ''), coalesce(api_key, '') <> '',
            llm._check_provider_options(options));
    IF coalesce(api_key, '') <> '' THEN
        INSERT INTO llm._provider_secret VALUES (name, api_key);
    END IF;
END;
$$;
COMMENT ON FUNCTION llm.create_provider(text, text, text, text, text, jsonb) IS 'Add an LLM endpoint: protocol openai or anthropic, base_url with the version prefix, the key as a value or the name of a server environment variable';

CREATE FUNCTION llm.alter_provider(
    name text,
    protocol text DEFAULT NULL,
    base_url text DEFAULT NULL,
    api_key text DEFAULT NULL,
    api_key_env text DEFAULT NULL,
    options jsonb DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    priority integer DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM llm._provider_must_exist(name);
    IF api_key IS NOT NULL AND api_key_env IS NOT NULL THEN
        RAISE EXCEPTION 'give api_key or api_key_env, not both'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE llm.provider p SET
        protocol = CASE WHEN alter_provider.protocol IS NULL THEN p.protocol
                        ELSE llm._check_protocol(alter_provider.protocol) END,
        base_url = CASE WHEN alter_provider.base_url IS NULL THEN p.base_url
                        ELSE llm._check_base_url(alter_provider.base_url) END,
        options = CASE WHEN alter_provider.options IS NULL THEN p.options
                       ELSE llm._check_provider_options(alter_provider.options) END,
        enabled = coalesce(alter_provider.enabled, p.enabled),
        priority = coalesce(alter_provider.priority, p.priority),
        updated_at = now()
    WHERE p.name = alter_provider.name;
    -- a new key of either kind replaces the old one; '' removes it
    IF api_key IS NOT NULL THEN
        DELETE FROM llm._provider_secret s WHERE s.provider = name;
        IF api_key <> '' THEN
            INSERT INTO llm._provider_secret VALUES (name, api_key);
        END IF;
        UPDATE llm.provider p SET has_api_key = (api_key <> ''), api_key_env = NULL
        WHERE p.name = alter_provider.name;
    ELSIF api_key_env IS NOT NULL THEN
        DELETE FROM llm._provider_secret s WHERE s.provider = name;
        UPDATE llm.provider p SET has_api_key = false, api_key_env = nullif(alter_provider.api_key_env, '')
        WHERE p.name = alter_provider.name;
    END IF;
END;
$$;
COMMENT ON FUNCTION llm.alter_provider(text, text, text, text, text, jsonb, boolean, integer) IS 'Change a provider; NULL arguments leave a setting as it is, api_key => '''' removes the key';

CREATE FUNCTION llm.drop_provider(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM llm._provider_must_exist(name);
    DELETE FROM llm.provider p WHERE p.name = drop_provider.name;
    DELETE FROM llm._setting WHERE key = 'primary_provider' AND value = name;
END;
$$;
COMMENT ON FUNCTION llm.drop_provider(text) IS 'Remove a provider, its key and its model routes';

CREATE FUNCTION llm.add_model(
    name text,
    provider text,
    upstream_model text DEFAULT NULL,
    priority integer DEFAULT 100,
    input_usd_per_mtok numeric DEFAULT NULL,
    output_usd_per_mtok numeric DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(name, '') = '' THEN
        RAISE EXCEPTION 'model name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM llm._provider_must_exist(provider);
    INSERT INTO llm.model AS m VALUES
        (name, provider, coalesce(nullif(upstream_model, ''), name), coalesce(priority, 100),
         input_usd_per_mtok, output_usd_per_mtok)
    ON CONFLICT ON CONSTRAINT model_pkey DO UPDATE SET
        upstream_model = EXCLUDED.upstream_model,
        priority = EXCLUDED.priority,
        input_usd_per_mtok = EXCLUDED.input_usd_per_mtok,
        output_usd_per_mtok = EXCLUDED.output_usd_per_mtok;
END;
$$;
COMMENT ON FUNCTION llm.add_model(text, text, text, integer, numeric, numeric) IS 'Route a model name to a provider (under an upstream name, with a priority in its fallback chain and prices per million tokens); adding it again updates it';

CREATE FUNCTION llm.drop_model(name text, provider text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM llm.model m
    WHERE m.name = drop_model.name AND (drop_model.provider IS NULL OR m.provider = drop_model.provider);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RAISE EXCEPTION 'model "%" has no route%', name,
            CASE WHEN provider IS NULL THEN '' ELSE format(' to provider "%s"', provider) END
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION llm.drop_model(text, text) IS 'Remove the routes of a model name (to one provider, or all)';

CREATE FUNCTION llm.use_provider(name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    previous text;
BEGIN
    PERFORM llm._provider_must_exist(name);
    IF NOT (SELECT enabled FROM llm.provider p WHERE p.name = use_provider.name) THEN
        RAISE EXCEPTION 'provider "%" is disabled', name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Enable it first with llm.alter_provider(%L, enabled => true).', name);
    END IF;
    previous := llm.current_provider();
    INSERT INTO llm._setting VALUES ('primary_provider', name)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
    RETURN previous;
END;
$$;
COMMENT ON FUNCTION llm.use_provider(text) IS 'Make a provider the primary for every model it serves and for pass-through names, for every session at once; returns the previous primary, so the same call with that name rolls back';

CREATE FUNCTION llm.current_provider() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT s.value FROM llm._setting s JOIN llm.provider p ON p.name = s.value
          WHERE s.key = 'primary_provider' AND p.enabled),
        (SELECT p.name FROM llm.provider p WHERE p.enabled ORDER BY p.priority, p.name LIMIT 1));
$$;
COMMENT ON FUNCTION llm.current_provider() IS 'The provider that serves pass-through model names and comes first in every chain it is part of';

-- Calls

CREATE FUNCTION llm.chat(prompt text, model text DEFAULT NULL, system text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'pg_llm_chat'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.chat(text, text, text, jsonb) IS 'Send a prompt (with an optional system prompt and OpenAI-style options) to a model and return the reply text';

CREATE FUNCTION llm.chat_completion(request jsonb, model text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'pg_llm_chat_completion'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.chat_completion(jsonb, text) IS 'Send an OpenAI-style chat completion request; returns the response in the OpenAI shape, whichever protocol served it, with the provider''s name';

CREATE FUNCTION llm.chat_stream(prompt text, model text DEFAULT NULL, system text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'pg_llm_chat_stream'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION llm.chat_stream(text, text, text, jsonb) IS 'Stream a reply as rows, one per chunk, while it is generated; call it in the select list for the rows to reach the client live';

-- The queue: logged, with a primary key, so a crash loses nothing.

CREATE TABLE llm.queue (
    id              bigserial PRIMARY KEY,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
    prompt          text NOT NULL,
    model           text NOT NULL,
    system          text,
    options         jsonb,
    target_table    regclass,
    target_column   name,
    target_key      jsonb,
    enqueued_by     oid NOT NULL,
    job             text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    reply           text,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX queue_ready ON llm.queue (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX queue_leased ON llm.queue (lease_until) WHERE status = 'running';
CREATE INDEX queue_job ON llm.queue (job, status) WHERE job IS NOT NULL;
COMMENT ON TABLE llm.queue IS 'Prompts waiting for, or answered by, the pg_llm worker; each role sees its own items';
-- a role that may read the queue sees only the items it enqueued
ALTER TABLE llm.queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_items ON llm.queue FOR SELECT
    USING (enqueued_by = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

CREATE FUNCTION llm.enqueue(
    prompt text,
    model text DEFAULT NULL,
    system text DEFAULT NULL,
    target_table regclass DEFAULT NULL,
    target_column name DEFAULT NULL,
    target_key jsonb DEFAULT NULL,
    options jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'pg_llm_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb) IS 'Queue a prompt for the background worker; with target_table, target_column and target_key (a JSON object of the row''s key columns) the reply is written into that row, with the rights of the role that enqueued it';

CREATE VIEW llm.queue_status AS
    SELECT s.status,
           count(q.id) AS items,
           min(q.created_at) AS oldest,
           max(q.finished_at) AS last_finished
    FROM (VALUES ('pending'), ('running'), ('done'), ('failed')) AS s(status)
    LEFT JOIN llm.queue q ON q.status = s.status
    GROUP BY s.status
    ORDER BY array_position(ARRAY['pending', 'running', 'done', 'failed'], s.status);
COMMENT ON VIEW llm.queue_status IS 'Queue items by status';

CREATE FUNCTION llm.worker_status(
    OUT pid integer, OUT database oid, OUT started_at timestamptz,
    OUT in_flight integer, OUT claimed integer, OUT completed bigint,
    OUT failed bigint, OUT items_per_second float8,
    OUT last_error text, OUT last_error_at timestamptz, OUT kind text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pg_llm_worker_status'
LANGUAGE C VOLATILE;
CREATE VIEW llm.workers AS
    SELECT w.pid, w.kind, d.datname AS database, w.started_at, w.in_flight, w.claimed,
           w.completed, w.failed, round(w.items_per_second::numeric, 1) AS items_per_second,
           w.last_error, w.last_error_at
    FROM llm.worker_status() w LEFT JOIN pg_catalog.pg_database d ON d.oid = w.database;
COMMENT ON VIEW llm.workers IS 'Each running queue worker (and usage writer): requests in flight, items done and failed, items per second, last error';

CREATE FUNCTION llm.purge_queue(older_than interval DEFAULT '7 days') RETURNS bigint
LANGUAGE sql AS $$
    WITH d AS (DELETE FROM llm.queue
               WHERE status IN ('done', 'failed') AND finished_at < now() - older_than
               RETURNING 1)
    SELECT count(*) FROM d;
$$;
COMMENT ON FUNCTION llm.purge_queue(interval) IS 'Delete finished queue items older than the given age';

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
    cost_usd        numeric(14, 8)
);
CREATE INDEX usage_ts ON llm.usage USING brin (ts);
CREATE INDEX usage_role_ts ON llm.usage (role_oid, ts);
COMMENT ON TABLE llm.usage IS 'One row per call: mode (sync, stream, many, queue, batch_api), provider, model, outcome, HTTP status, attempts, fallback, tokens, latency, time to first chunk, cost; each role sees its own rows';
ALTER TABLE llm.usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_usage ON llm.usage FOR SELECT
    USING (role_oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

CREATE FUNCTION llm.prune_usage(older_than interval DEFAULT '13 months') RETURNS bigint
LANGUAGE sql AS $$
    WITH d AS (DELETE FROM llm.usage WHERE ts < now() - older_than RETURNING 1)
    SELECT count(*) FROM d;
$$;
COMMENT ON FUNCTION llm.prune_usage(interval) IS 'Delete usage rows older than the given age';

CREATE VIEW llm.usage_summary AS
    SELECT u.mode, u.provider, u.model, u.upstream_model,
           count(*) AS calls,
           count(*) FILTER (WHERE u.outcome = 'ok') AS ok,
           count(*) FILTER (WHERE u.outcome <> 'ok') AS not_ok,
           count(*) FILTER (WHERE u.fallback) AS served_by_fallback,
           coalesce(sum(u.input_tokens), 0) AS input_tokens,
           coalesce(sum(u.output_tokens), 0) AS output_tokens,
           round(sum(u.cost_usd), 6) AS cost_usd,
           round(avg(u.latency_ms)) AS avg_latency_ms,
           round(avg(u.ttft_ms)) AS avg_ttft_ms,
           min(u.ts) AS first_call, max(u.ts) AS last_call
    FROM llm.usage u
    GROUP BY GROUPING SETS ((u.mode, u.provider, u.model, u.upstream_model), (u.mode), ())
    ORDER BY u.mode NULLS LAST, u.provider NULLS FIRST, u.model NULLS FIRST;
COMMENT ON VIEW llm.usage_summary IS 'The migration inventory: calls by mode, and per provider and model, with tokens and cost; rows with NULL provider are subtotals per mode, and the last row the total';

CREATE FUNCTION llm.cost_report(since timestamptz DEFAULT date_trunc('month', now()),
                                until timestamptz DEFAULT now())
RETURNS TABLE (model text, served_by text, calls bigint, input_tokens bigint,
               output_tokens bigint, cost_usd numeric, priced_on text,
               priced_upstream text, cost_there_usd numeric, savings_pct numeric)
LANGUAGE sql STABLE AS $$
    WITH used AS (
        SELECT u.model, string_agg(DISTINCT u.provider, ', ') AS served_by,
               count(*) AS calls,
               coalesce(sum(u.input_tokens), 0) AS input_tokens,
               coalesce(sum(u.output_tokens), 0) AS output_tokens,
               sum(u.cost_usd) AS cost_usd
        FROM llm.usage u
        WHERE u.ts >= since AND u.ts < until AND u.outcome <> 'retry'
        GROUP BY u.model)
    SELECT used.model, used.served_by, used.calls, used.input_tokens, used.output_tokens,
           round(used.cost_usd, 6), m.provider, m.upstream_model,
           round(used.input_tokens * m.input_usd_per_mtok / 1e6
                 + used.output_tokens * m.output_usd_per_mtok / 1e6, 6),
           CASE WHEN used.cost_usd > 0 THEN
               round(100 * (used.cost_usd - (used.input_tokens * m.input_usd_per_mtok / 1e6
                                            + used.output_tokens * m.output_usd_per_mtok / 1e6))
                     / used.cost_usd, 1)
           END
    FROM used
    LEFT JOIN llm.model m ON m.name = used.model
         AND m.input_usd_per_mtok IS NOT NULL AND m.output_usd_per_mtok IS NOT NULL
    ORDER BY used.model, 9 NULLS LAST;
$$;
COMMENT ON FUNCTION llm.cost_report(timestamptz, timestamptz) IS 'The tokens each model used in a period, priced on every provider that serves the model (its llm.model rows with prices), with the savings in percent against what was paid';

CREATE FUNCTION llm.usage_buffer_status(OUT pending integer, OUT dropped bigint)
AS 'MODULE_PATHNAME', 'pg_llm_usage_buffer_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.usage_buffer_status() IS 'Usage records waiting in shared memory, and records dropped because the buffer was full';

-- Budgets: per role and calendar month (UTC), enforced before each call.

CREATE TABLE llm.budget (
    role_oid        oid PRIMARY KEY,
    usd_per_month   numeric CHECK (usd_per_month >= 0),
    calls_per_month bigint CHECK (calls_per_month >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE llm.budget IS 'Monthly spending and call limits per role';
SELECT pg_catalog.pg_extension_config_dump('llm.budget', '');
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON llm.budget FOR EACH STATEMENT EXECUTE FUNCTION llm._config_changed();

CREATE FUNCTION llm.set_budget(role regrole, usd_per_month numeric, calls_per_month bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF usd_per_month < 0 OR calls_per_month < 0 THEN
        RAISE EXCEPTION 'a budget cannot be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF usd_per_month IS NULL AND calls_per_month IS NULL THEN
        DELETE FROM llm.budget b WHERE b.role_oid = role;
        RETURN;
    END IF;
    INSERT INTO llm.budget AS b (role_oid, usd_per_month, calls_per_month)
    VALUES (role, usd_per_month, calls_per_month)
    ON CONFLICT (role_oid) DO UPDATE
        SET usd_per_month = EXCLUDED.usd_per_month,
            calls_per_month = EXCLUDED.calls_per_month,
            updated_at = now();
END;
$$;
COMMENT ON FUNCTION llm.set_budget(regrole, numeric, bigint) IS 'Set a role''s monthly limit in USD (and optionally in calls); NULL for both removes it. Calls over budget fail before they are sent';

CREATE VIEW llm.budgets AS
    SELECT b.role_oid::regrole AS role, b.usd_per_month, b.calls_per_month,
           coalesce(round(sum(u.cost_usd), 6), 0) AS spent_usd,
           count(u.ts) AS calls
    FROM llm.budget b
    LEFT JOIN llm.usage u ON u.role_oid = b.role_oid AND u.outcome <> 'retry'
         AND u.ts >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    GROUP BY b.role_oid, b.usd_per_month, b.calls_per_month;
COMMENT ON VIEW llm.budgets IS 'Each budget and what its role spent this month (written usage rows)';

-- Nothing is granted to PUBLIC: administrators grant USAGE on the schema
-- and EXECUTE on the call functions to the roles that may call models.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA llm FROM PUBLIC;
