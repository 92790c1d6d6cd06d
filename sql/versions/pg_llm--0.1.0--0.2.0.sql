-- pg_llm 0.1.0 to 0.2.0: the changes to tables, and the functions and
-- views whose signature or shape changed, before every function and view
-- of 0.2.0 is defined again (the upgrade script is built from this file,
-- the definitions in sql/install/*.sql, and 0.1.0--0.2.0-after.sql).
\echo Use "ALTER EXTENSION pg_llm UPDATE TO '0.2.0'" to load this file. \quit

-- providers: the values of extra headers are kept with the key; a base_url
-- has no white space or control characters
ALTER TABLE llm.provider ADD COLUMN headers text[] NOT NULL DEFAULT '{}';
ALTER TABLE llm.provider DROP CONSTRAINT provider_base_url_check;
ALTER TABLE llm.provider ADD CONSTRAINT provider_base_url_check
    CHECK (base_url ~* '^https?://[^/]' AND base_url !~ '[[:cntrl:][:space:]]');
ALTER TABLE llm._provider_secret ALTER COLUMN api_key DROP NOT NULL;
ALTER TABLE llm._provider_secret ADD COLUMN headers jsonb;

-- the queue: who holds a lease, ready items by role for fair claims, and
-- items sent through a provider's batch API (sql/install/batch.sql)
ALTER TABLE llm.queue ADD COLUMN leased_by bigint;
ALTER TABLE llm.queue ADD COLUMN via text NOT NULL DEFAULT 'realtime' CHECK (via IN ('realtime', 'batch_api'));
ALTER TABLE llm.queue ADD COLUMN batch_id bigint;
ALTER TABLE llm.queue DROP CONSTRAINT queue_status_check;
ALTER TABLE llm.queue ADD CONSTRAINT queue_status_check
    CHECK (status IN ('pending', 'running', 'submitted', 'done', 'failed'));
DROP INDEX llm.queue_ready;
CREATE INDEX queue_ready ON llm.queue (enqueued_by, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'realtime';
CREATE INDEX queue_batch_ready ON llm.queue (model, next_attempt_at, id)
    WHERE status = 'pending' AND via = 'batch_api';
CREATE INDEX queue_batch ON llm.queue (batch_id) WHERE status = 'submitted';
DROP INDEX llm.queue_job;
CREATE INDEX queue_job ON llm.queue (job, target_key, id) INCLUDE (status) WHERE job IS NOT NULL;

-- models: the share of the prices a batch request costs; jobs: how their
-- items are sent
ALTER TABLE llm.model ADD COLUMN batch_price_factor numeric NOT NULL DEFAULT 0.5
    CHECK (batch_price_factor >= 0);
ALTER TABLE llm.job ADD COLUMN via text NOT NULL DEFAULT 'realtime' CHECK (via IN ('realtime', 'batch_api'));

-- budgets: a cap on queued items
ALTER TABLE llm.budget ADD COLUMN max_queued bigint CHECK (max_queued >= 0);

-- functions and views whose arguments, results or columns changed: the
-- privileges administrators granted on them are kept, to be granted again
-- on the new ones (0.1.0--0.2.0-after.sql)
SELECT pg_catalog.set_config('pg_llm.upgrade_grants', coalesce((
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'kind', g.kind, 'name', g.name, 'grantee', g.grantee, 'privilege', g.privilege))
    FROM (SELECT 'function' AS kind, p.proname::text AS name, a.grantee, a.privilege_type AS privilege
          FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
          WHERE p.pronamespace = 'llm'::regnamespace
            AND p.proname IN ('set_budget', 'usage_buffer_status', 'enqueue', 'create_job',
                              'add_model', 'purge_queue', 'drop_job', 'cost_report')
          UNION ALL
          SELECT 'view', c.relname::text, a.grantee, a.privilege_type
          FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
          WHERE c.relnamespace = 'llm'::regnamespace AND c.relname IN ('budgets', 'job_status')) g
    WHERE g.grantee <> 0 AND g.grantee <> (SELECT e.extowner FROM pg_catalog.pg_extension e
                                          WHERE e.extname = 'pg_llm')), '[]')::text, true);
DROP VIEW llm.budgets;
DROP VIEW llm.job_status;
DROP FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb);
DROP FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean);
DROP FUNCTION llm.add_model(text, text, text, integer, numeric, numeric);
DROP FUNCTION llm.purge_queue(interval);
DROP FUNCTION llm.drop_job(text);
DROP FUNCTION llm.cost_report(timestamptz, timestamptz);
DROP FUNCTION llm.set_budget(regrole, numeric, bigint);
DROP FUNCTION llm.usage_buffer_status();
DROP FUNCTION llm._job_text_like(oid);
-- Provider batch APIs: each batch the worker sends, recorded (and
-- committed, with its items) before it is sent, so that after a crash it
-- is resumed and never sent twice while it may still answer.

CREATE TABLE llm._batch (
    id                bigserial PRIMARY KEY,
    token             text NOT NULL UNIQUE,
    provider          text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('inline', 'openai', 'anthropic')),
    model             text NOT NULL,
    upstream_model    text NOT NULL,
    status            text NOT NULL DEFAULT 'preparing'
                      CHECK (status IN ('preparing', 'submitted', 'ended', 'split', 'failed', 'cancelled')),
    provider_batch_id text,
    provider_status   text,
    input_file_id     text,
    output_file_id    text,
    error_file_id     text,
    results_url       text,
    requests          integer NOT NULL,
    succeeded         integer NOT NULL DEFAULT 0,
    errored           integer NOT NULL DEFAULT 0,
    expired           integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    submitted_at      timestamptz,
    polled_at         timestamptz,
    finished_at       timestamptz,
    error             text
);
CREATE INDEX batch_active ON llm._batch (id) WHERE status IN ('preparing', 'submitted');
COMMENT ON TABLE llm._batch IS 'Each provider batch the worker sends: its items are in llm.queue with its id; see llm.batches';
COMMENT ON COLUMN llm._batch.token IS 'pg_llm''s own name for the batch, sent in its metadata where the provider keeps it, to find it again after a crash';

CREATE VIEW llm.batches AS
    SELECT b.id, b.provider, b.kind, b.model, b.upstream_model, b.status, b.provider_batch_id,
           b.provider_status, b.requests, b.succeeded, b.errored, b.expired,
           b.created_at, b.submitted_at, b.finished_at, b.error
    FROM llm._batch b
    ORDER BY b.id;
COMMENT ON VIEW llm.batches IS 'Each provider batch: kind (inline, openai, anthropic), the provider''s batch id and status, request counts, when it was submitted and finished';
CREATE OR REPLACE FUNCTION llm._config_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'pg_llm_config_changed' LANGUAGE C;

COMMENT ON FUNCTION llm._config_changed() IS 'Trigger: empty every backend''s cache of the configuration when it changes';
CREATE OR REPLACE FUNCTION llm._check_provider_options(options jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    v jsonb;
    ints constant text[] := ARRAY['connect_timeout_ms', 'timeout_ms', 'low_speed_time',
        'low_speed_limit', 'stream_idle_timeout', 'max_retries', 'default_max_tokens',
        'quota_cooldown'];
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
        ELSIF k IN ('rpm_limit', 'tpm_limit') THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric)
               OR v::numeric < 1 OR v::numeric > 2147483647 THEN
                RAISE EXCEPTION 'provider option "%" must be a whole number from 1 to 2147483647', k
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'It counts per minute, for the whole cluster; leave the option out for no limit.';
            END IF;
        ELSIF k = 'batch_timeout_ms' THEN
            IF jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric)
               OR v::numeric < 1 OR v::numeric > 2147483647 THEN
                RAISE EXCEPTION 'provider option "batch_timeout_ms" must be a whole number from 1 to 2147483647'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'It is how long one inline batch request may take before it is split in half and sent again.';
            END IF;
        ELSIF k = 'batch_api' THEN
            IF v NOT IN ('"inline"', '"openai"', '"anthropic"', '"none"') THEN
                RAISE EXCEPTION 'provider option "batch_api" must be "inline", "openai", "anthropic" or "none"'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'inline: a relay''s synchronous POST /batches; openai: the Files and Batch API; anthropic: Message Batches; none: no batch API.';
            END IF;
        ELSIF k = 'batch_url' THEN
            IF jsonb_typeof(v) <> 'string' OR v #>> '{}' !~ '^/[A-Za-z0-9/._-]*$' THEN
                RAISE EXCEPTION 'provider option "batch_url" must be a path such as "/v1/chat/completions"'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'It is the "url" of each line of a batch, and the "endpoint" of an OpenAI batch.';
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
                      OR h.key !~ '^[A-Za-z0-9-]{1,64}$'
                      OR h.value #>> '{}' ~ '[[:cntrl:]]'
                      OR lower(h.key) IN ('authorization', 'x-api-key', 'content-length', 'host',
                                          'content-type', 'transfer-encoding', 'expect')) THEN
                RAISE EXCEPTION 'provider option "headers" must be an object of header names and string values without control characters'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Authorization, x-api-key, Host, Content-Type, Content-Length, Transfer-Encoding and Expect are set by pg_llm; give the key with api_key or api_key_env.';
            END IF;
        ELSE
            RAISE EXCEPTION 'unknown provider option "%"', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known options: connect_timeout_ms, timeout_ms, low_speed_time, low_speed_limit, stream_idle_timeout, max_retries, default_max_tokens, max_tokens_param, anthropic_version, stream_usage, headers, rpm_limit, tpm_limit, quota_cooldown, batch_api, batch_timeout_ms, batch_url.';
        END IF;
    END LOOP;
    RETURN options;
END;
$$;

COMMENT ON FUNCTION llm._check_provider_options(jsonb) IS 'Check provider options: known keys with values of the right types only';
CREATE OR REPLACE FUNCTION llm._check_base_url(base_url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF base_url IS NULL OR base_url !~* '^https?://[^/\s]+' THEN
        RAISE EXCEPTION 'base_url must be an http or https URL'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The base_url given was %L.', base_url),
                  HINT = 'Include the version prefix, such as https://api.openai.com/v1.';
    END IF;
    IF base_url ~ '[[:cntrl:][:space:]]' THEN
        RAISE EXCEPTION 'base_url must not contain white space or control characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Percent-encode any such character the URL needs (%20 for a space).';
    END IF;
    RETURN rtrim(base_url, '/');
END;
$$;

COMMENT ON FUNCTION llm._check_base_url(text) IS 'Check a base_url (http or https, no white space or control characters) and drop its trailing slashes';
CREATE OR REPLACE FUNCTION llm._check_protocol(protocol text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF protocol IS NULL OR protocol NOT IN ('openai', 'anthropic') THEN
        RAISE EXCEPTION 'protocol must be "openai" or "anthropic"'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "openai" for any OpenAI-compatible server (DeepSeek, vLLM, Ollama, relays).';
    END IF;
    RETURN protocol;
END;
$$;

COMMENT ON FUNCTION llm._check_protocol(text) IS 'Check a protocol name: openai or anthropic';
CREATE OR REPLACE FUNCTION llm._check_batch_api(protocol text, options jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF options ->> 'batch_api' IS NULL OR options ->> 'batch_api' = 'none' THEN
        RETURN;
    END IF;
    IF (protocol = 'openai') <> (options ->> 'batch_api' IN ('inline', 'openai')) THEN
        RAISE EXCEPTION 'batch_api "%" does not go with the % protocol', options ->> 'batch_api', protocol
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The openai protocol takes "inline" or "openai", the anthropic protocol "anthropic"; "none" turns batches off.';
    END IF;
END;
$$;

COMMENT ON FUNCTION llm._check_batch_api(text, jsonb) IS 'Check that a provider''s batch_api goes with its protocol';
CREATE OR REPLACE FUNCTION llm._provider_must_exist(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM llm.provider p WHERE p.name = _provider_must_exist.name) THEN
        RAISE EXCEPTION 'provider "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM llm.provider.';
    END IF;
END;
$$;

COMMENT ON FUNCTION llm._provider_must_exist(text) IS 'Raise an error naming a provider that does not exist';
CREATE OR REPLACE FUNCTION llm._check_key(api_key text, api_key_env text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF api_key IS NOT NULL AND api_key_env IS NOT NULL THEN
        RAISE EXCEPTION 'give api_key or api_key_env, not both'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF api_key ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'api_key must not contain control characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A key is sent in a request header; check that no line break was copied with it.';
    END IF;
    IF api_key_env <> '' AND api_key_env !~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$' THEN
        RAISE EXCEPTION 'api_key_env must be the name of an environment variable'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The name given was %L.', api_key_env),
                  HINT = 'Use letters, digits and "_", such as OPENAI_API_KEY.';
    END IF;
END;
$$;

COMMENT ON FUNCTION llm._check_key(text, text) IS 'Check a key (never shown) and the name of a key''s environment variable';
CREATE OR REPLACE FUNCTION llm._header_names(options jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT h.name FROM jsonb_object_keys(options -> 'headers') AS h(name) ORDER BY 1);
$$;

COMMENT ON FUNCTION llm._header_names(jsonb) IS 'The names of the extra headers in provider options';
CREATE OR REPLACE FUNCTION llm.create_provider(
    name text,
    protocol text,
    base_url text,
    api_key text DEFAULT NULL,
    api_key_env text DEFAULT NULL,
    options jsonb DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    opts jsonb;
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
    PERFORM llm._check_key(api_key, api_key_env);
    opts := llm._check_provider_options(options);
    PERFORM llm._check_batch_api(protocol, opts);
    INSERT INTO llm.provider (name, protocol, base_url, api_key_env, has_api_key, options, headers)
    VALUES (name, llm._check_protocol(protocol), llm._check_base_url(base_url),
            nullif(api_key_env, ''), coalesce(api_key, '') <> '',
            opts - 'headers', llm._header_names(opts));
    IF coalesce(api_key, '') <> '' OR opts ? 'headers' THEN
        INSERT INTO llm._provider_secret (provider, api_key, headers)
        VALUES (name, nullif(api_key, ''), opts -> 'headers');
    END IF;
END;
$$;

COMMENT ON FUNCTION llm.create_provider(text, text, text, text, text, jsonb) IS 'Add an LLM endpoint: protocol openai or anthropic, base_url with the version prefix, the key as a value or the name of a server environment variable; the values of extra headers are kept secret like the key';
CREATE OR REPLACE FUNCTION llm.alter_provider(
    name text,
    protocol text DEFAULT NULL,
    base_url text DEFAULT NULL,
    api_key text DEFAULT NULL,
    api_key_env text DEFAULT NULL,
    options jsonb DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    priority integer DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    opts jsonb;
BEGIN
    PERFORM llm._provider_must_exist(name);
    PERFORM llm._check_key(api_key, api_key_env);
    IF options IS NOT NULL THEN
        opts := llm._check_provider_options(options);
    END IF;
    UPDATE llm.provider p SET
        protocol = CASE WHEN alter_provider.protocol IS NULL THEN p.protocol
                        ELSE llm._check_protocol(alter_provider.protocol) END,
        base_url = CASE WHEN alter_provider.base_url IS NULL THEN p.base_url
                        ELSE llm._check_base_url(alter_provider.base_url) END,
        options = CASE WHEN opts IS NULL THEN p.options ELSE opts - 'headers' END,
        headers = CASE WHEN opts IS NULL THEN p.headers ELSE llm._header_names(opts) END,
        enabled = coalesce(alter_provider.enabled, p.enabled),
        priority = coalesce(alter_provider.priority, p.priority),
        updated_at = now()
    WHERE p.name = alter_provider.name;
    PERFORM llm._check_batch_api(p.protocol, p.options) FROM llm.provider p WHERE p.name = alter_provider.name;
    -- new options replace the old ones, their headers included
    IF opts IS NOT NULL THEN
        INSERT INTO llm._provider_secret AS s (provider, headers)
        VALUES (alter_provider.name, opts -> 'headers')
        ON CONFLICT (provider) DO UPDATE SET headers = EXCLUDED.headers;
    END IF;
    -- a new key of either kind replaces the old one; '' removes it
    IF api_key IS NOT NULL THEN
        INSERT INTO llm._provider_secret AS s (provider, api_key)
        VALUES (alter_provider.name, nullif(api_key, ''))
        ON CONFLICT (provider) DO UPDATE SET api_key = EXCLUDED.api_key;
        UPDATE llm.provider p SET has_api_key = (api_key <> ''), api_key_env = NULL
        WHERE p.name = alter_provider.name;
    ELSIF api_key_env IS NOT NULL THEN
        UPDATE llm._provider_secret s SET api_key = NULL WHERE s.provider = alter_provider.name;
        UPDATE llm.provider p SET has_api_key = false, api_key_env = nullif(alter_provider.api_key_env, '')
        WHERE p.name = alter_provider.name;
    END IF;
    DELETE FROM llm._provider_secret s
    WHERE s.provider = alter_provider.name AND s.api_key IS NULL AND s.headers IS NULL;
END;
$$;

COMMENT ON FUNCTION llm.alter_provider(text, text, text, text, text, jsonb, boolean, integer) IS 'Change a provider; NULL arguments leave a setting as it is, api_key => '''' removes the key, and options given replace the old ones (extra headers included)';
CREATE OR REPLACE FUNCTION llm.drop_provider(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM llm._provider_must_exist(name);
    DELETE FROM llm.provider p WHERE p.name = drop_provider.name;
    DELETE FROM llm._setting WHERE key = 'primary_provider' AND value = name;
END;
$$;

COMMENT ON FUNCTION llm.drop_provider(text) IS 'Remove a provider, its key and its model routes';
CREATE OR REPLACE FUNCTION llm.add_model(
    name text,
    provider text,
    upstream_model text DEFAULT NULL,
    priority integer DEFAULT 100,
    input_usd_per_mtok numeric DEFAULT NULL,
    output_usd_per_mtok numeric DEFAULT NULL,
    batch_price_factor numeric DEFAULT 0.5)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(name, '') = '' THEN
        RAISE EXCEPTION 'model name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_price_factor < 0 THEN
        RAISE EXCEPTION 'batch_price_factor cannot be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM llm._provider_must_exist(provider);
    INSERT INTO llm.model AS m VALUES
        (name, provider, coalesce(nullif(upstream_model, ''), name), coalesce(priority, 100),
         input_usd_per_mtok, output_usd_per_mtok, coalesce(batch_price_factor, 0.5))
    ON CONFLICT ON CONSTRAINT model_pkey DO UPDATE SET
        upstream_model = EXCLUDED.upstream_model,
        priority = EXCLUDED.priority,
        input_usd_per_mtok = EXCLUDED.input_usd_per_mtok,
        output_usd_per_mtok = EXCLUDED.output_usd_per_mtok,
        batch_price_factor = EXCLUDED.batch_price_factor;
END;
$$;

COMMENT ON FUNCTION llm.add_model(text, text, text, integer, numeric, numeric, numeric) IS 'Route a model name to a provider (under an upstream name, with a priority in its fallback chain, prices per million tokens and the share of them a batch request costs); adding it again updates it';
CREATE OR REPLACE FUNCTION llm.drop_model(name text, provider text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
CREATE OR REPLACE FUNCTION llm.use_provider(name text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
CREATE OR REPLACE FUNCTION llm.current_provider() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT s.value FROM llm._setting s JOIN llm.provider p ON p.name = s.value
          WHERE s.key = 'primary_provider' AND p.enabled),
        (SELECT p.name FROM llm.provider p WHERE p.enabled ORDER BY p.priority, p.name LIMIT 1));
$$;

COMMENT ON FUNCTION llm.current_provider() IS 'The provider that serves pass-through model names and comes first in every chain it is part of';
CREATE OR REPLACE FUNCTION llm.chat(prompt text, model text DEFAULT NULL, system text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'pg_llm_chat'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION llm.chat(text, text, text, jsonb) IS 'Send a prompt (with an optional system prompt and OpenAI-style options) to a model and return the reply text';
CREATE OR REPLACE FUNCTION llm.chat_completion(request jsonb, model text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'pg_llm_chat_completion'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION llm.chat_completion(jsonb, text) IS 'Send an OpenAI-style chat completion request; returns the response in the OpenAI shape, whichever protocol served it, with the provider''s name';
CREATE OR REPLACE FUNCTION llm.chat_stream(prompt text, model text DEFAULT NULL, system text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS SETOF text
AS 'MODULE_PATHNAME', 'pg_llm_chat_stream'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;

COMMENT ON FUNCTION llm.chat_stream(text, text, text, jsonb) IS 'Stream a reply as rows, one per chunk, while it is generated; call it in the select list for the rows to reach the client live';
CREATE OR REPLACE FUNCTION llm.chat_many(prompts text[], model text DEFAULT NULL, system text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS TABLE (ord integer, content text, error text)
AS 'MODULE_PATHNAME', 'pg_llm_chat_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000;

COMMENT ON FUNCTION llm.chat_many(text[], text, text, jsonb) IS 'Send many prompts at once (up to llm.many_concurrency in flight), each with retries and fallback; one row per prompt as it completes: its place in the array, the reply, or the error of a prompt that failed for good';
CREATE OR REPLACE FUNCTION llm._provider_status(
    OUT provider text, OUT enabled boolean,
    OUT rpm_limit integer, OUT requests_last_minute bigint,
    OUT tpm_limit integer, OUT tokens_last_minute bigint,
    OUT cooldown_until timestamptz, OUT cooldown_reason text,
    OUT waiting integer, OUT rate_limited_last_minute bigint, OUT last_rate_limited_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pg_llm_provider_status'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION llm._provider_status() IS 'Per provider: its limits and the last minute''s requests and tokens against them, its cooldown and why, the callers waiting, and its recent 429s (the view llm.provider_status shows it)';
CREATE OR REPLACE FUNCTION llm.clear_cooldown(provider text) RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_clear_cooldown'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION llm.clear_cooldown(text) IS 'End a provider''s cooldown, and its time out of quota, now, for the whole cluster (after adding credit, say)';
CREATE OR REPLACE VIEW llm.provider_status AS
    SELECT * FROM llm._provider_status() ORDER BY provider;

COMMENT ON VIEW llm.provider_status IS 'Per provider, cluster-wide: rpm and tpm limits with the requests and tokens of the last minute, the cooldown (until and why), the callers waiting for their turn, and the 429s of the last minute: what to look at when calls get slow';
CREATE OR REPLACE FUNCTION llm.enqueue(
    prompt text,
    model text DEFAULT NULL,
    system text DEFAULT NULL,
    target_table regclass DEFAULT NULL,
    target_column name DEFAULT NULL,
    target_key jsonb DEFAULT NULL,
    options jsonb DEFAULT NULL,
    via text DEFAULT 'realtime')
RETURNS bigint
AS 'MODULE_PATHNAME', 'pg_llm_enqueue'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text) IS 'Queue a prompt for the background worker; with target_table, target_column and target_key (a JSON object of the row''s key columns) the reply is written into that row, with the rights of the role that enqueued it; via => ''batch_api'' sends it through its provider''s batch API';
CREATE OR REPLACE VIEW llm.queue_status AS
    SELECT s.status,
           count(q.id) AS items,
           min(q.created_at) AS oldest,
           max(q.finished_at) AS last_finished
    FROM (VALUES ('pending'), ('running'), ('submitted'), ('done'), ('failed')) AS s(status)
    LEFT JOIN llm.queue q ON q.status = s.status
    GROUP BY s.status
    ORDER BY array_position(ARRAY['pending', 'running', 'submitted', 'done', 'failed'], s.status);

COMMENT ON VIEW llm.queue_status IS 'Queue items by status';
CREATE OR REPLACE FUNCTION llm.worker_status(
    OUT pid integer, OUT database oid, OUT started_at timestamptz,
    OUT in_flight integer, OUT claimed integer, OUT completed bigint,
    OUT failed bigint, OUT items_per_second float8,
    OUT last_error text, OUT last_error_at timestamptz, OUT kind text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pg_llm_worker_status'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION llm.worker_status() IS 'Each running queue worker and usage writer, from shared memory (the view llm.workers shows it)';
CREATE OR REPLACE FUNCTION llm._lease_alive(holder bigint) RETURNS boolean
AS 'MODULE_PATHNAME', 'pg_llm_lease_alive'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION llm._lease_alive(bigint) IS 'Whether a running worker holds queue leases under this token';
CREATE OR REPLACE VIEW llm.workers AS
    SELECT w.pid, w.kind, d.datname AS database, w.started_at, w.in_flight, w.claimed,
           w.completed, w.failed, round(w.items_per_second::numeric, 1) AS items_per_second,
           w.last_error, w.last_error_at
    FROM llm.worker_status() w LEFT JOIN pg_catalog.pg_database d ON d.oid = w.database;

COMMENT ON VIEW llm.workers IS 'Each running queue worker (and usage writer): requests in flight, items done and failed, items per second, last error';
CREATE OR REPLACE FUNCTION llm.purge_queue(older_than interval DEFAULT '7 days', unfinished boolean DEFAULT false)
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (DELETE FROM llm.queue
               WHERE (status IN ('done', 'failed') AND finished_at < now() - older_than)
                  OR (unfinished AND status IN ('pending', 'submitted') AND created_at < now() - older_than)
               RETURNING 1)
    SELECT count(*) FROM d;
$$;

COMMENT ON FUNCTION llm.purge_queue(interval, boolean) IS 'Delete finished queue items older than the given age; with unfinished, also the pending items and those waiting in a provider batch (a batch whose items are all gone is cancelled at the provider)';
CREATE OR REPLACE VIEW llm.batches AS
    SELECT b.id, b.provider, b.kind, b.model, b.upstream_model, b.status, b.provider_batch_id,
           b.provider_status, b.requests, b.succeeded, b.errored, b.expired,
           b.created_at, b.submitted_at, b.finished_at, b.error
    FROM llm._batch b
    ORDER BY b.id;

COMMENT ON VIEW llm.batches IS 'Each provider batch: kind (inline, openai, anthropic), the provider''s batch id and status, request counts, when it was submitted and finished';
CREATE OR REPLACE FUNCTION llm.prune_usage(older_than interval DEFAULT '13 months') RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    WITH d AS (DELETE FROM llm.usage WHERE ts < now() - older_than RETURNING 1)
    SELECT count(*) FROM d;
$$;

COMMENT ON FUNCTION llm.prune_usage(interval) IS 'Delete usage rows older than the given age';
CREATE OR REPLACE VIEW llm.usage_summary AS
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
CREATE OR REPLACE FUNCTION llm.cost_report(since timestamptz DEFAULT date_trunc('month', now()),
                                until timestamptz DEFAULT now())
RETURNS TABLE (model text, served_by text, calls bigint, input_tokens bigint,
               output_tokens bigint, cost_usd numeric, priced_on text,
               priced_upstream text, cost_there_usd numeric, savings_pct numeric,
               batch_calls bigint, batch_cost_usd numeric, cost_there_batch_usd numeric)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH used AS (
        SELECT u.model, string_agg(DISTINCT u.provider, ', ') AS served_by,
               count(*) AS calls,
               coalesce(sum(u.input_tokens), 0) AS input_tokens,
               coalesce(sum(u.output_tokens), 0) AS output_tokens,
               sum(u.cost_usd) AS cost_usd,
               count(*) FILTER (WHERE u.mode = 'batch_api') AS batch_calls,
               sum(u.cost_usd) FILTER (WHERE u.mode = 'batch_api') AS batch_cost_usd
        FROM llm.usage u
        WHERE u.ts >= since AND u.ts < until AND u.outcome <> 'retry'
        GROUP BY u.model),
    priced AS (
        SELECT used.*, m.provider, m.upstream_model, m.batch_price_factor,
               used.input_tokens * m.input_usd_per_mtok / 1e6
                   + used.output_tokens * m.output_usd_per_mtok / 1e6 AS there
        FROM used
        LEFT JOIN llm.model m ON m.name = used.model
             AND m.input_usd_per_mtok IS NOT NULL AND m.output_usd_per_mtok IS NOT NULL)
    SELECT p.model, p.served_by, p.calls, p.input_tokens, p.output_tokens,
           round(p.cost_usd, 6), p.provider, p.upstream_model, round(p.there, 6),
           CASE WHEN p.cost_usd > 0 THEN round(100 * (p.cost_usd - p.there) / p.cost_usd, 1) END,
           p.batch_calls, round(p.batch_cost_usd, 6), round(p.there * p.batch_price_factor, 6)
    FROM priced p
    ORDER BY p.model, 9 NULLS LAST;
$$;

COMMENT ON FUNCTION llm.cost_report(timestamptz, timestamptz) IS 'The tokens each model used in a period, priced on every provider that serves the model (its llm.model rows with prices), with the savings in percent against what was paid; batch_calls and batch_cost_usd are the part sent through batch APIs, cost_there_batch_usd what all the tokens would cost there through its batch API';
CREATE OR REPLACE FUNCTION llm.usage_buffer_status(OUT pending integer, OUT dropped bigint, OUT waited bigint)
AS 'MODULE_PATHNAME', 'pg_llm_usage_buffer_status'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION llm.usage_buffer_status() IS 'Usage records waiting in shared memory for their database''s writer, records dropped (only by calls cleaned up after an error that found no room for 10 s), and records that had to wait for room';
CREATE OR REPLACE FUNCTION llm.set_budget(role regrole, usd_per_month numeric, calls_per_month bigint DEFAULT NULL,
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
CREATE OR REPLACE VIEW llm.budgets AS
    SELECT b.role_oid::regrole AS role, b.usd_per_month, b.calls_per_month, b.max_queued,
           coalesce(round(sum(u.cost_usd), 6), 0) AS spent_usd,
           count(u.ts) AS calls
    FROM llm.budget b
    LEFT JOIN llm.usage u ON u.role_oid = b.role_oid AND u.outcome <> 'retry'
         AND u.ts >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
    GROUP BY b.role_oid, b.usd_per_month, b.calls_per_month, b.max_queued;

COMMENT ON VIEW llm.budgets IS 'Each budget and what its role spent this month (written usage rows)';
CREATE OR REPLACE FUNCTION llm._key_identifies_row(rel regclass, key_columns text[]) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_index i
        WHERE i.indrelid = rel AND i.indisunique AND i.indisvalid
          AND i.indexprs IS NULL AND i.indpred IS NULL
          AND (SELECT bool_and(a.attname = ANY (key_columns))
               FROM unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) AS k(attnum)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum));
$$;

COMMENT ON FUNCTION llm._key_identifies_row(regclass, text[]) IS 'Whether some columns contain all the columns of a plain unique index of a table (so they identify at most one row)';
CREATE OR REPLACE FUNCTION llm._job_parse_template(template text, OUT parts text[], OUT columns text[])
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i integer := 1;
    k integer;
    e integer;
    lit text := '';
    col text;
BEGIN
    parts := '{}';
    columns := '{}';
    IF template IS NULL THEN
        RAISE EXCEPTION 'prompt_template must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    LOOP
        k := regexp_instr(template, '[{}]', i);
        IF k = 0 THEN
            lit := lit || substr(template, i);
            EXIT;
        END IF;
        lit := lit || substr(template, i, k - i);
        IF substr(template, k, 2) IN ('{{', '}}') THEN
            lit := lit || substr(template, k, 1);
            i := k + 2;
            CONTINUE;
        END IF;
        IF substr(template, k, 1) = '}' THEN
            RAISE EXCEPTION 'unmatched "}" at character % of the prompt template', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {column} for a column''s value, and {{ or }} for a literal brace.';
        END IF;
        e := regexp_instr(template, '[{}]', k + 1);
        IF e = 0 OR substr(template, e, 1) = '{' THEN
            RAISE EXCEPTION 'unclosed "{" at character % of the prompt template', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {column} for a column''s value, and {{ or }} for a literal brace.';
        END IF;
        col := btrim(substr(template, k + 1, e - k - 1));
        IF col = '' THEN
            RAISE EXCEPTION 'empty placeholder at character % of the prompt template', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Write {column} for a column''s value, and {{ or }} for a literal brace.';
        END IF;
        parts := parts || lit;
        columns := columns || col;
        lit := '';
        i := e + 1;
    END LOOP;
    parts := parts || lit;
END;
$$;

COMMENT ON FUNCTION llm._job_parse_template(text) IS 'The literal parts and the placeholders of a job''s prompt template';
CREATE OR REPLACE FUNCTION llm._job_prompt_sql(template text, alias text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    pieces text[] := '{}';
    i integer;
BEGIN
    t := llm._job_parse_template(template);
    FOR i IN 1 .. cardinality(t.parts) LOOP
        IF t.parts[i] <> '' THEN
            pieces := pieces || quote_literal(t.parts[i]);
        END IF;
        IF i <= cardinality(t.columns) THEN
            pieces := pieces || format('coalesce((%s.%I)::text, %L)', alias, t.columns[i], '');
        END IF;
    END LOOP;
    RETURN array_to_string(pieces, ' || ');
END;
$$;

COMMENT ON FUNCTION llm._job_prompt_sql(text, text) IS 'The SQL expression that renders a job''s prompt template for a row alias';
CREATE OR REPLACE FUNCTION llm._job_list(columns name[], pattern text, separator text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT string_agg(format(pattern, c), separator ORDER BY o)
    FROM unnest(columns) WITH ORDINALITY AS u(c, o);
$$;

COMMENT ON FUNCTION llm._job_list(name[], text, text) IS 'Column names formatted with a pattern and joined, for generated SQL';
CREATE OR REPLACE FUNCTION llm._job_storable(typid oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.typtype <> 'p'
    FROM pg_type t
    WHERE t.oid = CASE WHEN (SELECT d.typtype FROM pg_type d WHERE d.oid = typid) = 'd'
                       THEN (SELECT d.typbasetype FROM pg_type d WHERE d.oid = typid)
                       ELSE typid END;
$$;

COMMENT ON FUNCTION llm._job_storable(oid) IS 'Whether a column of this type can take a reply (any type but a pseudo-type: the reply is read by the type''s input function)';
CREATE OR REPLACE FUNCTION llm._job_column(tab regclass, col text, what text) RETURNS pg_attribute
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a pg_attribute;
BEGIN
    SELECT * INTO a FROM pg_attribute
    WHERE attrelid = tab AND attname = col AND attnum > 0 AND NOT attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% "%" of table % does not exist', what, col, tab
            USING ERRCODE = 'undefined_column',
                  HINT = format('The columns of %s are: %s.', tab,
                                (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
                                 FROM pg_attribute WHERE attrelid = tab AND attnum > 0 AND NOT attisdropped));
    END IF;
    RETURN a;
END;
$$;

COMMENT ON FUNCTION llm._job_column(regclass, text, text) IS 'A column of a table, or an error listing the table''s columns';
CREATE OR REPLACE FUNCTION llm._job_prepare() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    c text;
    inputs name[] := '{}';
    target regclass;
    a pg_attribute;
    probe bigint;
BEGIN
    IF NEW.name IS NULL OR NEW.name !~ '^[A-Za-z0-9_.-]{1,40}$' THEN
        RAISE EXCEPTION 'invalid job name %', coalesce(quote_literal(NEW.name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 1 to 40 letters, digits, "_", "." or "-".';
    END IF;
    IF NEW.source_table IS NULL THEN
        RAISE EXCEPTION 'source_table must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = NEW.source_table) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'source % is not a table', NEW.source_table
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NEW.result_table = NEW.source_table THEN
        NEW.result_table := NULL;
    END IF;
    target := coalesce(NEW.result_table, NEW.source_table);
    IF NEW.result_table IS NOT NULL
       AND (SELECT relkind FROM pg_class WHERE oid = NEW.result_table) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'result % is not a table', NEW.result_table
            USING ERRCODE = 'wrong_object_type';
    END IF;

    -- the key
    IF coalesce(cardinality(NEW.key_columns), 0) = 0 OR array_position(NEW.key_columns, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'key_columns must name the columns that identify a row'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example ''{id}''.';
    END IF;
    IF cardinality(NEW.key_columns) > 50 THEN
        RAISE EXCEPTION 'a job''s key has at most 50 columns' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (SELECT count(DISTINCT k) FROM unnest(NEW.key_columns) k) < cardinality(NEW.key_columns) THEN
        RAISE EXCEPTION 'key_columns names a column twice' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH c IN ARRAY NEW.key_columns LOOP
        PERFORM llm._job_column(NEW.source_table, c, 'key column');
        IF NEW.result_table IS NOT NULL THEN
            PERFORM llm._job_column(NEW.result_table, c, 'key column');
        END IF;
    END LOOP;

    -- the template and its input columns
    t := llm._job_parse_template(NEW.prompt_template);
    IF cardinality(t.columns) = 0 THEN
        RAISE EXCEPTION 'the prompt template refers to no column'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Write {column} where the row''s value goes, as in ''Classify the sentiment of: {body}''.';
    END IF;
    FOREACH c IN ARRAY t.columns LOOP
        a := llm._job_column(NEW.source_table, c, 'column');
        IF NOT c = ANY (inputs) THEN
            IF NEW.track_changes AND a.attgenerated <> '' THEN
                RAISE EXCEPTION 'input column "%" of table % is generated', c, NEW.source_table
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Refer to the columns it is computed from, or create the job with track_changes => false.';
            END IF;
            inputs := inputs || c::name;
        END IF;
    END LOOP;
    NEW.input_columns := inputs;

    -- the result column
    IF NEW.result_column IS NULL AND NEW.result_table IS NOT NULL THEN
        SELECT CASE WHEN count(*) = 1 THEN min(attname) END INTO NEW.result_column
        FROM pg_attribute
        WHERE attrelid = NEW.result_table AND attnum > 0 AND NOT attisdropped
          AND attgenerated = '' AND NOT attname = ANY (NEW.key_columns);
        IF NEW.result_column IS NULL THEN
            RAISE EXCEPTION 'result_column is needed: result table % has no single column besides the key', NEW.result_table
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF NEW.result_column IS NULL THEN
        RAISE EXCEPTION 'result_column must name the column the replies go to'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give result_column, and result_table to write them into a separate table.';
    END IF;
    a := llm._job_column(target, NEW.result_column, 'result column');
    IF NOT llm._job_storable(a.atttypid) THEN
        RAISE EXCEPTION 'column "%" of table % cannot take a reply', NEW.result_column, target
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = format('Its type is %s.', format_type(a.atttypid, a.atttypmod));
    END IF;
    IF a.attgenerated <> '' THEN
        RAISE EXCEPTION 'result column "%" of table % is generated', NEW.result_column, target
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.result_column = ANY (NEW.key_columns) THEN
        RAISE EXCEPTION 'result column "%" is a key column', NEW.result_column
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.result_table IS NULL AND NEW.result_column = ANY (inputs) THEN
        RAISE EXCEPTION 'result column "%" is an input column of the prompt template', NEW.result_column
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A job cannot write into a column its prompt reads: each reply would queue the row again.';
    END IF;

    -- the model, the system prompt and the options, as llm.enqueue checks
    -- them; the model is resolved now (llm.default_model if none is given)
    IF NEW.options IS NOT NULL AND jsonb_typeof(NEW.options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    probe := llm.enqueue('pg_llm job check', NEW.model, NEW.system, options => NEW.options, via => NEW.via);
    SELECT q.model INTO NEW.model FROM llm.queue q WHERE q.id = probe;
    DELETE FROM llm.queue q WHERE q.id = probe;
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION llm._job_prepare() IS 'Trigger: derive a job''s input columns, check its columns, resolve and check its model and options';
CREATE OR REPLACE FUNCTION llm._job_restrict(fn regprocedure, grantee regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g oid;
BEGIN
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    FOR g IN SELECT DISTINCT a.grantee FROM pg_proc p, aclexplode(p.proacl) a
             WHERE p.oid = fn AND a.grantee <> p.proowner AND a.grantee <> 0 LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', fn, (SELECT rolname FROM pg_roles WHERE oid = g));
    END LOOP;
    IF grantee IS NOT NULL THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, (SELECT rolname FROM pg_roles WHERE oid = grantee));
    END IF;
END;
$$;

COMMENT ON FUNCTION llm._job_restrict(regprocedure, regrole) IS 'Revoke every privilege on a generated function, then grant EXECUTE to one role';
CREATE OR REPLACE FUNCTION llm._job_loop_sql(j llm.job, from_clause text, supersede boolean) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    FOR r IN SELECT %1$s AS prompt, jsonb_build_object(%2$s) AS key
             FROM %3$s
             WHERE %4$s.%5$I IS NULL AND num_nulls(%6$s) = 0 AND num_nonnulls(%7$s) > 0 LOOP
        prompts := array_append(prompts, r.prompt);
        keys := array_append(keys, r.key);
        IF cardinality(prompts) >= 10000 THEN
            n := n + llm.%8$I(prompts, keys, %9$s);
            prompts := '{}';
            keys := '{}';
        END IF;
    END LOOP;
    IF cardinality(prompts) > 0 OR NOT %9$s THEN
        n := n + llm.%8$I(prompts, keys, %9$s);
    END IF;$f$,
        llm._job_prompt_sql(j.prompt_template, 's'),
        llm._job_list(j.key_columns, '%1$L, s.%1$I', ', '),
        from_clause,
        CASE WHEN j.result_table IS NULL THEN 's' ELSE 'x' END, j.result_column,
        llm._job_list(j.key_columns, 's.%1$I', ', '),
        llm._job_list(j.input_columns, 's.%1$I', ', '),
        '_job_' || j.name || '_sink',
        CASE WHEN supersede THEN 'true' ELSE 'false' END);
$$;

COMMENT ON FUNCTION llm._job_loop_sql(llm.job, text, boolean) IS 'The loop of a job''s generated functions that queues rows in chunks';
CREATE OR REPLACE FUNCTION llm._job_add_keys_sql(j llm.job, from_clause text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($f$
    INSERT INTO %1$s AS x (%2$s)
    SELECT %3$s FROM %4$s
    WHERE num_nulls(%3$s) = 0 AND num_nonnulls(%5$s) > 0
      AND NOT EXISTS (SELECT 1 FROM %1$s AS x WHERE %6$s)
    ON CONFLICT DO NOTHING;$f$,
        j.result_table, llm._job_list(j.key_columns, '%1$I', ', '),
        llm._job_list(j.key_columns, 's.%1$I', ', '),
        from_clause,
        llm._job_list(j.input_columns, 's.%1$I', ', '),
        llm._job_list(j.key_columns, 'x.%1$I = s.%1$I', ' AND '));
$$;

COMMENT ON FUNCTION llm._job_add_keys_sql(llm.job, text) IS 'The statement that adds missing key rows to a job''s result table';
CREATE OR REPLACE FUNCTION llm._job_install() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owner_name name := (SELECT rolname FROM pg_roles WHERE oid = NEW.owner);
    src text := NEW.source_table::text;
    sep boolean := NEW.result_table IS NOT NULL;
    tgt text := coalesce(NEW.result_table, NEW.source_table)::text;
    trigger_fn text := '_job_' || NEW.name || '_trigger';
    run_fn text := '_job_' || NEW.name || '_run';
    sink_fn text := '_job_' || NEW.name || '_sink';
    key_join text := llm._job_list(NEW.key_columns, 'x.%1$I = s.%1$I', ' AND ');
    may_write text;
    denied text;
    body text;
    fn text;
BEGIN
    IF sep THEN
        -- the owner may still add key rows and write the result
        may_write := format('(%s AND has_column_privilege(%s::oid, %L, %L))',
            llm._job_list(NEW.key_columns,
                          format('has_column_privilege(%s::oid, %%1$L, %L)', NEW.result_table::oid, 'INSERT'),
                          ' AND '),
            NEW.result_table::oid, NEW.result_column, 'UPDATE');
        denied := format($f$
        IF NOT %s THEN
            RAISE WARNING USING MESSAGE = %L, HINT = %L;
            RETURN NULL;
        END IF;$f$, may_write,
            format('pg_llm job "%s": role %s may not write the result table %s; rows not queued', NEW.name, owner_name, tgt),
            'Grant it INSERT on the key columns and UPDATE on the result column, or drop the job.');
    END IF;

    -- the run function: the backfill, as the owner
    body := format($f$
#variable_conflict use_column
DECLARE
    r record;
    prompts text[] := '{}';
    keys jsonb[] := '{}';
    n bigint := 0;
BEGIN
    -- one run of a job at a time
    PERFORM pg_advisory_xact_lock(hashtext(%L));
%s
%s
    RETURN n;
END;$f$,
        'pg_llm job ' || NEW.name,
        CASE WHEN sep THEN llm._job_add_keys_sql(NEW, src || ' AS s') ELSE '' END,
        llm._job_loop_sql(NEW, CASE WHEN sep THEN format('%s AS s JOIN %s AS x ON (%s)', src, tgt, key_join)
                                    ELSE src || ' AS s' END, false));
    EXECUTE format('CREATE FUNCTION llm.%I() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L', run_fn, body);

    -- the trigger function: rows inserted (a statement at a time, from the
    -- transition table) and rows whose input changed (a row at a time)
    body := format($f$
#variable_conflict use_column
DECLARE
    r record;
    prompts text[] := '{}';
    keys jsonb[] := '{}';
    n bigint := 0;
BEGIN
    IF TG_RELID <> %s::oid AND NOT EXISTS (
           SELECT 1 FROM pg_partition_ancestors(TG_RELID) a WHERE a.relid = %s::oid) THEN
        RAISE EXCEPTION USING MESSAGE = %L, ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN%s
%s
%s
        RETURN NULL;
    END IF;
%s
END;$f$,
        NEW.source_table::oid, NEW.source_table::oid,
        format('the trigger function of pg_llm job "%s" fired on another table than %s', NEW.name, src),
        coalesce(denied, ''),
        CASE WHEN sep THEN llm._job_add_keys_sql(NEW, 'new_rows AS s') ELSE '' END,
        llm._job_loop_sql(NEW, CASE WHEN sep THEN format('new_rows AS s JOIN %s AS x ON (%s)', tgt, key_join)
                                    ELSE 'new_rows AS s' END, true),
        CASE WHEN NOT sep THEN format($g$
    IF TG_WHEN = 'BEFORE' THEN
        -- an input changed: the result is no longer current, unless this
        -- statement set it too
        IF record_image_eq(ROW(NEW.%1$I), ROW(OLD.%1$I)) THEN
            NEW.%1$I := NULL;
        END IF;
        RETURN NEW;
    END IF;
    -- queue the new input; a pending item for the old input is replaced
    -- (an empty prompt only removes it)
    PERFORM llm.%2$I(ARRAY[CASE WHEN NEW.%1$I IS NULL AND num_nulls(%3$s) = 0 AND num_nonnulls(%4$s) > 0
                               THEN %5$s ELSE '' END],
                    ARRAY[jsonb_build_object(%6$s)], true);
    RETURN NULL;$g$,
            NEW.result_column, sink_fn,
            llm._job_list(NEW.key_columns, 'NEW.%1$I', ', '),
            llm._job_list(NEW.input_columns, 'NEW.%1$I', ', '),
            llm._job_prompt_sql(NEW.prompt_template, 'NEW'),
            llm._job_list(NEW.key_columns, '%1$L, NEW.%1$I', ', '))
        ELSE format($g$
    IF num_nulls(%1$s) > 0 THEN
        RETURN NULL;
    END IF;%2$s
    IF TG_OP = 'UPDATE' THEN
        -- an input changed: the result is no longer current
        UPDATE %3$s AS x SET %5$I = NULL WHERE %6$s AND x.%5$I IS NOT NULL;
    ELSIF EXISTS (SELECT 1 FROM %3$s AS x WHERE %6$s AND x.%5$I IS NOT NULL) THEN
        -- inserted (into a partition) with a result already there
        RETURN NULL;
    END IF;
    IF num_nonnulls(%8$s) > 0 THEN
        INSERT INTO %3$s AS x (%4$s) VALUES (%1$s) ON CONFLICT DO NOTHING;
    END IF;
    -- a pending item for the old input is replaced (an empty prompt only
    -- removes it)
    PERFORM llm.%7$I(ARRAY[CASE WHEN num_nonnulls(%8$s) > 0 THEN %9$s ELSE '' END],
                    ARRAY[jsonb_build_object(%10$s)], true);
    RETURN NULL;$g$,
            llm._job_list(NEW.key_columns, 'NEW.%1$I', ', '), denied,
            tgt, llm._job_list(NEW.key_columns, '%1$I', ', '), NEW.result_column,
            llm._job_list(NEW.key_columns, 'x.%1$I = NEW.%1$I', ' AND '),
            sink_fn, llm._job_list(NEW.input_columns, 'NEW.%1$I', ', '),
            llm._job_prompt_sql(NEW.prompt_template, 'NEW'),
            llm._job_list(NEW.key_columns, '%1$L, NEW.%1$I', ', '))
        END);
    EXECUTE format('CREATE FUNCTION llm.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
                   'SET search_path = pg_catalog, pg_temp AS %L', trigger_fn, body);

    -- the sink: inserts the items as the extension owner
    EXECUTE format('CREATE FUNCTION llm.%I(prompts text[], keys jsonb[], supersede boolean) RETURNS bigint '
                   'LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp '
                   'AS %L', sink_fn, format('SELECT llm._job_sink(%L, prompts, keys, supersede)', NEW.name));

    FOREACH fn IN ARRAY ARRAY[run_fn, trigger_fn] LOOP
        EXECUTE format('ALTER FUNCTION llm.%I() OWNER TO %I', fn, owner_name);
        PERFORM llm._job_restrict(format('llm.%I()', fn)::regprocedure, NULL);
    END LOOP;
    PERFORM llm._job_restrict(format('llm.%I(text[], jsonb[], boolean)', sink_fn)::regprocedure, NEW.owner);
    EXECUTE format('COMMENT ON FUNCTION llm.%I() IS %L', run_fn,
                   format('The backfill of pg_llm job "%s", as its owner (called by llm.run_job)', NEW.name));
    EXECUTE format('COMMENT ON FUNCTION llm.%I() IS %L', trigger_fn,
                   format('Trigger: queue the inserted and changed rows of %s for pg_llm job "%s", as its owner', src, NEW.name));
    EXECUTE format('COMMENT ON FUNCTION llm.%I(text[], jsonb[], boolean) IS %L', sink_fn,
                   format('Queue prompts for pg_llm job "%s" (executable by its owner only)', NEW.name));
    -- members of the extension: dropped with it, and not dumped (a restore
    -- of llm.job generates them again)
    EXECUTE format('ALTER EXTENSION pg_llm ADD FUNCTION llm.%I()', run_fn);
    EXECUTE format('ALTER EXTENSION pg_llm ADD FUNCTION llm.%I()', trigger_fn);
    EXECUTE format('ALTER EXTENSION pg_llm ADD FUNCTION llm.%I(text[], jsonb[], boolean)', sink_fn);
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION llm._job_install() IS 'Trigger: generate a new job''s trigger, run and sink functions';
CREATE OR REPLACE FUNCTION llm._job_uninstall() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fn regprocedure;
    tg record;
BEGIN
    FOREACH fn IN ARRAY ARRAY[
            to_regprocedure(format('llm.%I()', '_job_' || OLD.name || '_trigger')),
            to_regprocedure(format('llm.%I()', '_job_' || OLD.name || '_run')),
            to_regprocedure(format('llm.%I(text[], jsonb[], boolean)', '_job_' || OLD.name || '_sink'))] LOOP
        CONTINUE WHEN fn IS NULL;
        FOR tg IN SELECT t.tgname, t.tgrelid::regclass AS rel FROM pg_trigger t
                  WHERE t.tgfoid = fn AND t.tgparentid = 0 LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', tg.tgname, tg.rel);
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = fn
                   AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e') THEN
            EXECUTE format('ALTER EXTENSION pg_llm DROP FUNCTION %s', fn);
        END IF;
        EXECUTE format('DROP FUNCTION %s', fn);
    END LOOP;
    IF current_setting('pg_llm_job.cancel', true) = OLD.name THEN
        DELETE FROM llm.queue q WHERE q.job = OLD.name AND q.status IN ('pending', 'submitted');
    END IF;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION llm._job_uninstall() IS 'Trigger: drop a deleted job''s triggers and functions (and, for llm.drop_job(name, cancel => true), its unanswered items)';
CREATE OR REPLACE FUNCTION llm._job_no_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'llm.job cannot be truncated' USING HINT = 'Drop jobs with llm.drop_job().';
END;
$$;

COMMENT ON FUNCTION llm._job_no_truncate() IS 'Trigger: refuse TRUNCATE of llm.job, which would leave the jobs'' triggers behind';
CREATE OR REPLACE FUNCTION llm._job_sink(job_name text, prompts text[], keys jsonb[], supersede boolean)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    n bigint;
    wake bigint;
BEGIN
    SELECT * INTO j FROM llm.job WHERE llm.job.name = job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', job_name USING ERRCODE = 'undefined_object';
    END IF;
    -- planned at each call (EXECUTE): a plan kept from the first chunks of a
    -- run, when the queue held none of the job's items, would check each
    -- key of the later chunks against all of them one by one
    IF supersede THEN
        EXECUTE 'DELETE FROM llm.queue q USING unnest($2) AS k(key)
                 WHERE q.job = $1 AND q.status = ''pending'' AND q.target_key = k.key'
        USING j.name, keys;
    END IF;
    EXECUTE 'INSERT INTO llm.queue (prompt, model, system, options, target_table, target_column,
                                    target_key, enqueued_by, job, via)
             SELECT u.prompt, $3, $4, $5, $6, $7, u.key, $8, $9, $10
             FROM unnest($1, $2) AS u(prompt, key)
             WHERE u.prompt <> '''' AND u.key IS NOT NULL
               AND ($11 OR NOT EXISTS (SELECT 1 FROM llm.queue q
                                        WHERE q.job = $9 AND q.status IN (''pending'', ''running'', ''submitted'')
                                          AND q.target_key = u.key))'
    USING prompts, keys, j.model, j.system, j.options, coalesce(j.result_table, j.source_table),
          j.result_column, j.owner::oid, j.name, j.via, supersede;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF NOT supersede AND j.last_run_at IS DISTINCT FROM now() THEN
        UPDATE llm.job SET last_run_at = now() WHERE llm.job.name = j.name;
    END IF;
    IF n > 0 AND current_setting('pg_llm_job.wakeup', true) IS DISTINCT FROM 'on' THEN
        wake := llm.enqueue('pg_llm job wake-up', j.model, via => j.via);
        DELETE FROM llm.queue q WHERE q.id = wake;
        PERFORM set_config('pg_llm_job.wakeup', 'on', true);
    END IF;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION llm._job_sink(text, text[], jsonb[], boolean) IS 'Insert a job''s items into the queue as its owner''s; called by the job''s own sink only';
CREATE OR REPLACE FUNCTION llm.create_job(
    name text,
    source_table regclass,
    key_columns text[],
    prompt_template text,
    result_column name DEFAULT NULL,
    result_table regclass DEFAULT NULL,
    model text DEFAULT NULL,
    system text DEFAULT NULL,
    options jsonb DEFAULT NULL,
    track_changes boolean DEFAULT true,
    via text DEFAULT 'realtime')
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    target regclass;
    c name;
    trig text;
    inputs text;
    changed text;
    func text;
BEGIN
    -- (this function runs as the caller, who may execute only the internal
    -- functions of llm granted to PUBLIC, such as llm._key_identifies_row)
    -- the definition (name, structure, template, model and options are
    -- checked by llm._job_prepare, which also serves restores of llm.job)
    BEGIN
        INSERT INTO llm.job AS jj (name, source_table, key_columns, prompt_template, result_table,
                                   result_column, model, system, options, track_changes, via)
        VALUES (create_job.name, create_job.source_table, create_job.key_columns::name[],
                create_job.prompt_template, create_job.result_table, create_job.result_column,
                create_job.model, create_job.system, create_job.options,
                coalesce(create_job.track_changes, true), coalesce(create_job.via, 'realtime'))
        RETURNING * INTO j;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'job "%" already exists', create_job.name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Drop it first with llm.drop_job(), or choose another name.';
    END;
    target := coalesce(j.result_table, j.source_table);

    -- the key identifies one row, in the source and in the result table:
    -- it contains all the columns of a unique index (plain, not partial)
    IF NOT llm._key_identifies_row(j.source_table, j.key_columns) THEN
        RAISE EXCEPTION 'key_columns do not identify one row of table %', j.source_table
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'No primary key or unique index of the table is made of the key''s columns.',
                  HINT = 'Use the primary key''s columns, such as ''{id}''.';
    END IF;
    IF j.result_table IS NOT NULL THEN
        IF NOT llm._key_identifies_row(j.result_table, j.key_columns) THEN
            RAISE EXCEPTION 'key_columns do not identify one row of result table %', j.result_table
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'No primary key or unique index of the table is made of the key''s columns.',
                      HINT = 'Give the result table a primary key on the key columns.';
        END IF;
        SELECT a.attname INTO c FROM pg_attribute a
        WHERE a.attrelid = j.result_table AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
          AND NOT a.attname = ANY (j.key_columns) AND a.attname <> j.result_column
        ORDER BY a.attnum LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'column "%" of result table % is NOT NULL without a default', c, j.result_table
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The job adds the key rows the result table lacks, with nothing else in them.';
        END IF;
    END IF;

    -- the creating role, which the job will run as, may do what the job does
    FOREACH c IN ARRAY j.key_columns || j.input_columns LOOP
        IF NOT has_column_privilege(j.source_table, c, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied to read column "%" of table %', c, j.source_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A job runs with the rights of the role that creates it.';
        END IF;
    END LOOP;
    FOREACH c IN ARRAY j.key_columns LOOP
        IF NOT has_column_privilege(target, c, 'SELECT') THEN
            RAISE EXCEPTION 'permission denied to read column "%" of table %', c, target
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A job runs with the rights of the role that creates it.';
        END IF;
        IF j.result_table IS NOT NULL AND NOT has_column_privilege(target, c, 'INSERT') THEN
            RAISE EXCEPTION 'permission denied to insert into column "%" of table %', c, target
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'The job adds the key rows the result table lacks, with the rights of the role that creates it.';
        END IF;
    END LOOP;
    IF NOT has_column_privilege(target, j.result_column, 'UPDATE') THEN
        RAISE EXCEPTION 'permission denied to update column "%" of table %', j.result_column, target
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The worker writes replies back with the rights of the job''s owner, the role that creates it.';
    END IF;
    IF j.result_table IS NOT NULL THEN
        -- the key columns can be copied and compared across the two tables
        EXECUTE (SELECT format('EXPLAIN INSERT INTO %s AS x (%s) SELECT %s FROM %s AS s '
                               'WHERE NOT EXISTS (SELECT 1 FROM %s AS x WHERE %s)',
                               target, string_agg(quote_ident(k), ', ' ORDER BY o),
                               string_agg('s.' || quote_ident(k), ', ' ORDER BY o), j.source_table, target,
                               string_agg(format('x.%1$I = s.%1$I', k), ' AND ' ORDER BY o))
                 FROM unnest(j.key_columns) WITH ORDINALITY AS u(k, o));
    END IF;

    IF j.track_changes THEN
        IF NOT has_table_privilege(j.source_table, 'TRIGGER') THEN
            RAISE EXCEPTION 'permission denied to create triggers on table %', j.source_table
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'track_changes puts triggers on the source table; create the job with track_changes => false and run it with llm.run_job().';
        END IF;
        IF row_security_active(j.source_table) THEN
            RAISE EXCEPTION 'table % has row-level security for role %', j.source_table, current_user
                USING ERRCODE = 'feature_not_supported',
                      DETAIL = 'The job''s trigger sees every row written, also those the job''s owner may not read.',
                      HINT = 'Create the job with track_changes => false and run it with llm.run_job(): it reads only the rows its owner may read.';
        END IF;
        -- the triggers are created by the calling role, with its rights
        func := format('llm.%I()', '_job_' || j.name || '_trigger');
        trig := 'llm_job_' || j.name;
        SELECT string_agg(quote_ident(k), ', ' ORDER BY o),
               format('NOT record_image_eq(ROW(%s), ROW(%s))',
                      string_agg('OLD.' || quote_ident(k), ', ' ORDER BY o),
                      string_agg('NEW.' || quote_ident(k), ', ' ORDER BY o))
        INTO inputs, changed
        FROM unnest(j.input_columns) WITH ORDINALITY AS u(k, o);
        IF (SELECT relkind FROM pg_class WHERE oid = j.source_table) = 'p' THEN
            -- a row trigger is cloned to every partition (also those
            -- attached later), so rows inserted into a partition directly
            -- are seen too; a statement trigger of the parent would miss them
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s FOR EACH ROW %s EXECUTE FUNCTION %s',
                           trig || '_insert', j.source_table,
                           CASE WHEN j.result_table IS NULL
                                THEN format('WHEN (NEW.%I IS NULL)', j.result_column) ELSE '' END,
                           func);
        ELSE
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                           'FOR EACH STATEMENT EXECUTE FUNCTION %s',
                           trig || '_insert', j.source_table, func);
        END IF;
        IF j.result_table IS NULL THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                           'EXECUTE FUNCTION %s',
                           trig || '_reset', inputs,
                           j.source_table, changed, func);
        END IF;
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW WHEN (%s) '
                       'EXECUTE FUNCTION %s',
                       trig || '_update', inputs,
                       j.source_table, changed, func);
    END IF;
END;
$$;

COMMENT ON FUNCTION llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text) IS 'Define a job that sends each row of source_table, rendered through prompt_template ({column} placeholders), to a model and writes the reply into result_column (of result_table, keyed like the source, if given); with track_changes, inserted and changed rows are queued by triggers; via => ''batch_api'' sends its items through the provider''s batch API. The job runs as the role that creates it';
CREATE OR REPLACE FUNCTION llm.run_job(name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j llm.job;
    run_fn text;
    n bigint;
BEGIN
    SELECT * INTO j FROM llm.job WHERE llm.job.name = run_job.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', run_job.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM llm.job.';
    END IF;
    run_fn := format('llm.%I()', '_job_' || j.name || '_run');
    IF to_regprocedure(run_fn) IS NULL THEN
        RAISE EXCEPTION 'the functions of job "%" are missing', j.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Drop the job and create it again.';
    END IF;
    IF NOT has_function_privilege(run_fn, 'EXECUTE') THEN
        RAISE EXCEPTION 'permission denied to run job "%"', j.name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('A job runs as its owner, %s; only that role and its members may run it.', j.owner);
    END IF;
    EXECUTE format('SELECT %s', run_fn) INTO n;
    RETURN n;
END;
$$;

COMMENT ON FUNCTION llm.run_job(text) IS 'Queue every row of a job that has no result (NULL) and no pending or running item of the job; returns the number of rows queued. Runs as the job''s owner';
CREATE OR REPLACE FUNCTION llm.drop_job(name text, cancel boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- the job's trigger (llm._job_uninstall) removes its unanswered items
    -- when asked to, after row-level security let the caller drop the job
    IF cancel THEN
        PERFORM set_config('pg_llm_job.cancel', drop_job.name, true);
    END IF;
    DELETE FROM llm.job WHERE llm.job.name = drop_job.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job "%" does not exist', drop_job.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM llm.job.';
    END IF;
    PERFORM set_config('pg_llm_job.cancel', '', true);
END;
$$;

COMMENT ON FUNCTION llm.drop_job(text, boolean) IS 'Remove a job and its triggers; its queue items stay, unless cancel: then its items not yet answered (pending, or waiting in a provider batch) go too, and a provider batch left without items is cancelled';
CREATE OR REPLACE VIEW llm.job_status AS
    SELECT j.name AS job,
           j.owner,
           j.source_table,
           coalesce(j.result_table, j.source_table)::text || '.' || quote_ident(j.result_column) AS result,
           c.pending, c.running, c.submitted, c.done, c.failed,
           CASE WHEN f.finished + c.pending + c.running + c.submitted > 0
                THEN round(100.0 * f.finished / (f.finished + c.pending + c.running + c.submitted), 1) END
               AS percent_done,
           round(m.per_second, 1) AS items_per_second,
           CASE WHEN c.pending + c.running > 0 AND m.per_second > 0
                THEN make_interval(secs => round((c.pending + c.running) / m.per_second)) END AS eta,
           l.last_finished,
           e.last_error
    FROM llm.job j
    -- each part is served by an index of llm.queue, so that the view stays
    -- quick with a million items
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE q.status = 'pending') AS pending,
               count(*) FILTER (WHERE q.status = 'running') AS running,
               count(*) FILTER (WHERE q.status = 'submitted') AS submitted,
               count(*) FILTER (WHERE q.status = 'done') AS done,
               count(*) FILTER (WHERE q.status = 'failed') AS failed
        FROM llm.queue q WHERE q.job = j.name) c
    CROSS JOIN LATERAL (
        SELECT count(*) AS finished FROM llm.queue q
        WHERE q.job = j.name AND q.status IN ('done', 'failed')
          AND q.finished_at >= coalesce(j.last_run_at, '-infinity')) f
    -- finished in the last minute, per second since the first of them
    -- started (at most 60 s)
    CROSS JOIN LATERAL (
        SELECT coalesce(count(*) / greatest(1.0, least(60.0, extract(epoch FROM now() - min(q.started_at)))), 0)
                   AS per_second
        FROM llm.queue q
        WHERE q.job = j.name AND q.status IN ('done', 'failed')
          AND q.finished_at > now() - interval '1 minute') m
    CROSS JOIN LATERAL (
        SELECT greatest(
                   (SELECT max(q.finished_at) FROM llm.queue q
                    WHERE q.job = j.name AND q.status = 'done' AND q.finished_at IS NOT NULL),
                   (SELECT max(q.finished_at) FROM llm.queue q
                    WHERE q.job = j.name AND q.status = 'failed' AND q.finished_at IS NOT NULL))
               AS last_finished) l
    LEFT JOIN LATERAL (
        SELECT q.error AS last_error FROM llm.queue q
        WHERE q.job = j.name AND q.status = 'failed' AND q.finished_at IS NOT NULL
        ORDER BY q.finished_at DESC LIMIT 1) e ON true
    WHERE pg_catalog.pg_has_role(j.owner::oid, 'USAGE')
    ORDER BY j.name;

COMMENT ON VIEW llm.job_status IS 'Per job: queue items pending, running, submitted (in a provider batch), done and failed; percent of the work since the last run_job that is finished; items per second over the last minute; estimated time to finish; last finished item and last error. Watch it with \watch 1';
-- pg_llm 0.1.0 to 0.2.0, after the definitions: what needs the new
-- functions.

-- header values move from the options to the secret table
INSERT INTO llm._provider_secret AS s (provider, headers)
SELECT p.name, p.options -> 'headers' FROM llm.provider p WHERE p.options ? 'headers'
ON CONFLICT (provider) DO UPDATE SET headers = EXCLUDED.headers;
UPDATE llm.provider p SET headers = llm._header_names(p.options), options = p.options - 'headers'
WHERE p.options ? 'headers';
COMMENT ON TABLE llm.provider IS 'LLM endpoints pg_llm can call; keys and the values of extra headers are kept apart, in a table only the extension owner can read';
COMMENT ON COLUMN llm.provider.headers IS 'The names of the extra request headers sent to the provider; their values are secret';
COMMENT ON TABLE llm._provider_secret IS 'API keys of providers and the values of their extra headers; never granted to anyone';
COMMENT ON COLUMN llm.queue.leased_by IS 'The running worker that holds the item (a token of its life; a restarted server or worker has new ones)';
COMMENT ON TABLE llm.budget IS 'Monthly spending and call limits per role, and a cap on its queued items';

-- the privileges granted on the functions and views that were replaced
DO $$
DECLARE
    g jsonb;
BEGIN
    FOR g IN SELECT * FROM pg_catalog.jsonb_array_elements(
                 pg_catalog.current_setting('pg_llm.upgrade_grants')::jsonb)
    LOOP
        IF g ->> 'kind' = 'function' THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I',
                (SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                 WHERE p.pronamespace = 'llm'::regnamespace AND p.proname = g ->> 'name'),
                (g ->> 'grantee')::oid::regrole);
        ELSE
            EXECUTE pg_catalog.format('GRANT %s ON llm.%I TO %I', g ->> 'privilege', g ->> 'name',
                (g ->> 'grantee')::oid::regrole);
        END IF;
    END LOOP;
END;
$$;
COMMENT ON COLUMN llm.queue.via IS 'realtime: a call of its own; batch_api: through its provider''s batch API (half the price, answered within the provider''s window)';
COMMENT ON COLUMN llm.queue.batch_id IS 'The provider batch (llm.batches) that holds or held the item';
COMMENT ON COLUMN llm.model.batch_price_factor IS 'The share of the prices a request through the provider''s batch API costs (0.5: half price)';
COMMENT ON COLUMN llm.job.via IS 'How its items are sent: realtime calls, or the provider''s batch API';
-- Nothing is granted to PUBLIC: administrators grant USAGE on the schema
-- and EXECUTE on the call functions to the roles that may call models.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA llm FROM PUBLIC;
-- a catalog-only check that create_job runs with its caller's rights
GRANT EXECUTE ON FUNCTION llm._key_identifies_row(regclass, text[]) TO PUBLIC;
