-- pg_llm: the LLM gateway inside PostgreSQL.  The install script is built
-- from sql/install/*.sql (see the Makefile); this part holds providers,
-- models and keys.
\echo Use "CREATE EXTENSION pg_llm" to load this file. \quit

-- Every function of this script runs with search_path pinned to
-- "pg_catalog, pg_temp" and names the extension's own objects with their
-- schema, so that no caller's search_path can put its own functions or
-- operators into them.

-- Configuration is readable and writable by the extension owner only; an
-- administrator grants what analysts need (see the README, "Privileges").
REVOKE ALL ON SCHEMA llm FROM PUBLIC;

CREATE TABLE llm.provider (
    name        text PRIMARY KEY
                CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    protocol    text NOT NULL CHECK (protocol IN ('openai', 'anthropic')),
    base_url    text NOT NULL CHECK (base_url ~* '^https?://[^/]' AND base_url !~ '[[:cntrl:][:space:]]'),
    enabled     boolean NOT NULL DEFAULT true,
    priority    integer NOT NULL DEFAULT 100,
    api_key_env text,
    has_api_key boolean NOT NULL DEFAULT false,
    options     jsonb NOT NULL DEFAULT '{}',
    headers     text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE llm.provider IS 'LLM endpoints pg_llm can call; keys and the values of extra headers are kept apart, in a table only the extension owner can read';
COMMENT ON COLUMN llm.provider.headers IS 'The names of the extra request headers sent to the provider; their values are secret';

CREATE TABLE llm._provider_secret (
    provider    text PRIMARY KEY REFERENCES llm.provider (name)
                ON UPDATE CASCADE ON DELETE CASCADE,
    api_key     text,
    headers     jsonb,
    transport   jsonb
);
COMMENT ON TABLE llm._provider_secret IS 'API keys of providers and the values of their extra headers; never granted to anyone';
COMMENT ON COLUMN llm._provider_secret.transport IS 'The secret transport options: the proxy URL with its credentials, and client_key';

CREATE TABLE llm.model (
    name                text NOT NULL CHECK (name <> ''),
    provider            text NOT NULL REFERENCES llm.provider (name)
                        ON UPDATE CASCADE ON DELETE CASCADE,
    upstream_model      text NOT NULL CHECK (upstream_model <> ''),
    priority            integer NOT NULL DEFAULT 100,
    input_usd_per_mtok  numeric CHECK (input_usd_per_mtok >= 0),
    output_usd_per_mtok numeric CHECK (output_usd_per_mtok >= 0),
    batch_price_factor  numeric NOT NULL DEFAULT 0.5 CHECK (batch_price_factor >= 0),
    cached_input_usd_per_mtok numeric CHECK (cached_input_usd_per_mtok >= 0),
    priority_price_factor numeric NOT NULL DEFAULT 2 CHECK (priority_price_factor >= 0),
    cache_ttl           interval CHECK (cache_ttl >= interval '0'),
    PRIMARY KEY (name, provider)
);
COMMENT ON TABLE llm.model IS 'Model names SQL callers use, where each goes, and its price; several rows with one name form its fallback chain';
COMMENT ON COLUMN llm.model.batch_price_factor IS 'The share of the prices a request through the provider''s batch API costs (0.5: half price); also the price of the flex service tier, which is billed at batch rates';
COMMENT ON COLUMN llm.model.cached_input_usd_per_mtok IS 'The price per million input tokens read from the provider''s prompt cache; NULL: the input price';
COMMENT ON COLUMN llm.model.cache_ttl IS 'How long the response cache serves a reply of this route (0: until it is pruned for room); NULL: llm.cache_ttl';
COMMENT ON COLUMN llm.model.priority_price_factor IS 'The multiple of the prices a call served at the priority service tier costs (2: twice)';

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
COMMENT ON FUNCTION llm._config_changed() IS 'Trigger: empty every backend''s cache of the configuration when it changes';
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
        ELSIF k = 'structured_output' THEN
            IF v NOT IN ('"json_schema"', '"tool"', '"prompt"') THEN
                RAISE EXCEPTION 'provider option "structured_output" must be "json_schema", "tool" or "prompt"'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'How a schema is asked for: json_schema: response_format (the openai default); tool: a forced tool (the anthropic default); prompt: in the system prompt, for servers with neither. The answer is validated either way.';
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
        ELSIF k IN ('stream_usage', 'pass_through', 'count_tokens') THEN
            IF jsonb_typeof(v) <> 'boolean' THEN
                RAISE EXCEPTION 'provider option "%" must be true or false', k
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'proxy' THEN
            IF jsonb_typeof(v) <> 'string'
               OR v #>> '{}' !~* '^(https?|socks5h?)://[^/[:space:][:cntrl:]]+/?$' THEN
                RAISE EXCEPTION 'provider option "proxy" must be an http, https or socks5 URL such as "http://proxy.internal:3128"'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Credentials go in the URL (http://user:password@host:port) and are kept secret like the key; socks5h:// lets the proxy resolve host names.';
            END IF;
        ELSIF k = 'no_proxy' THEN
            IF jsonb_typeof(v) <> 'string' OR v #>> '{}' !~ '^[A-Za-z0-9.,:*/\[\]_ -]*$' THEN
                RAISE EXCEPTION 'provider option "no_proxy" must be a list of host names, domains, IP addresses or CIDR blocks separated by commas, or "*"'
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k = 'ca_file' THEN
            IF jsonb_typeof(v) <> 'string' OR v #>> '{}' !~ '^/' OR v #>> '{}' ~ '[[:cntrl:]]' THEN
                RAISE EXCEPTION 'provider option "ca_file" must be the absolute path of a PEM file'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'The file holds the CA certificates to trust for this provider (and its proxy) instead of the system''s; the database server''s operating-system user must be able to read it.';
            END IF;
        ELSIF k IN ('client_cert', 'client_key') THEN
            IF jsonb_typeof(v) <> 'string'
               OR NOT (v #>> '{}' ~ '^/[^[:cntrl:]]*$'
                       OR v #>> '{}' ~ '^-----BEGIN [A-Z0-9 ]+-----'
                       OR (k = 'client_key' AND v = '"[secret]"')) THEN
                RAISE EXCEPTION 'provider option "%" must be the absolute path of a PEM file or the PEM text itself', k
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'client_cert and client_key are the certificate and unencrypted key pg_llm presents to a server that asks for one (mutual TLS); the key is kept secret like the API key.';
            END IF;
        ELSIF k = 'http_version' THEN
            IF v NOT IN ('"1.1"', '"2"') THEN
                RAISE EXCEPTION 'provider option "http_version" must be "1.1" or "2"'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Leave it out for the default: HTTP/2 over https when the server offers it, HTTP/1.1 otherwise.';
            END IF;
        ELSIF k ~* '(verify|insecure|skip.*(tls|ssl|cert)|(tls|ssl|cert).*(skip|off|disable))' THEN
            RAISE EXCEPTION 'certificate checks cannot be turned off (provider option "%")', k
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For a server whose certificate is signed by a private CA, give the CA''s PEM bundle as the ca_file option.';
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
                      HINT = 'Known options: connect_timeout_ms, timeout_ms, low_speed_time, low_speed_limit, stream_idle_timeout, max_retries, default_max_tokens, max_tokens_param, anthropic_version, stream_usage, headers, rpm_limit, tpm_limit, quota_cooldown, batch_api, batch_timeout_ms, batch_url, pass_through, count_tokens, structured_output, proxy, no_proxy, ca_file, client_cert, client_key, http_version.';
        END IF;
    END LOOP;
    IF options ? 'client_key' AND NOT options ? 'client_cert' THEN
        RAISE EXCEPTION 'provider option "client_key" needs "client_cert"'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the certificate the key belongs to as client_cert (a PEM file may hold both, then client_key can be left out).';
    END IF;
    RETURN options;
END;
$$;
COMMENT ON FUNCTION llm._check_provider_options(jsonb) IS 'Check provider options: known keys with values of the right types only';

CREATE FUNCTION llm._check_base_url(base_url text) RETURNS text
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
    -- the paths pg_llm adds itself, given in the URL as well: every call
    -- would go to .../chat/completions/chat/completions and get a 404
    IF rtrim(base_url, '/') ~* '/(chat/completions|completions|messages|embeddings|responses|batches|files)$' THEN
        RAISE WARNING 'base_url ends with "/%", which pg_llm adds to it itself',
                      substring(rtrim(base_url, '/') from '(?i)/(chat/completions|completions|messages|embeddings|responses|batches|files)$')
            USING DETAIL = 'The OpenAI protocol posts to base_url/chat/completions, the Anthropic protocol to base_url/messages.',
                  HINT = 'Give the URL up to its version prefix, such as https://api.openai.com/v1.';
    END IF;
    IF base_url ~* '/(v[0-9]+[a-z0-9]*)/\1(/|$)' THEN
        RAISE WARNING 'base_url repeats its version prefix'
            USING DETAIL = format('The base_url given was %L.', base_url),
                  HINT = 'Give the version prefix once, such as https://api.openai.com/v1.';
    END IF;
    RETURN rtrim(base_url, '/');
END;
$$;
COMMENT ON FUNCTION llm._check_base_url(text) IS 'Check a base_url (http or https, no white space or control characters; a warning for one that ends with a path pg_llm adds itself or repeats its version prefix) and drop its trailing slashes';

CREATE FUNCTION llm._check_protocol(protocol text) RETURNS text
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

-- The batch API a provider uses must be one its protocol speaks: inline and
-- openai for the openai protocol, anthropic for the anthropic protocol.
CREATE FUNCTION llm._check_batch_api(protocol text, options jsonb) RETURNS void
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

CREATE FUNCTION llm._provider_must_exist(name text) RETURNS void
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

-- A key, or the name of the environment variable that holds one, must be
-- something that can go into a request header: no control characters
-- (a CR or LF would start a header of the caller's choosing).  The value
-- of a key is never shown, not even in this error.
CREATE FUNCTION llm._check_key_env(api_key_env text) RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_check_key_env'
LANGUAGE C IMMUTABLE;
COMMENT ON FUNCTION llm._check_key_env(text) IS 'Refuse an api_key_env that looks like a key, without showing it or logging its statement';

CREATE FUNCTION llm._check_key(api_key text, api_key_env text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- a key pasted as the variable's name is refused without being shown
    PERFORM llm._check_key_env(api_key_env);
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

-- The transport options that are secret (the proxy URL with its
-- credentials, client_key) are kept with the key; llm.provider.options
-- shows them masked: "[secret]" for the key and for the proxy's
-- credentials.  Options given back masked keep the stored secret.
CREATE FUNCTION llm._transport_masked(options jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN options ? 'proxy' THEN
               jsonb_set(options, '{proxy}', to_jsonb(pg_catalog.regexp_replace(
                   options ->> 'proxy', '^([A-Za-z0-9]+://)[^@/]*@', '\1[secret]@')))
           ELSE options END
           || CASE WHEN options ? 'client_key' THEN '{"client_key": "[secret]"}'::jsonb
                   ELSE '{}'::jsonb END;
$$;
COMMENT ON FUNCTION llm._transport_masked(jsonb) IS 'Provider options with the proxy''s credentials and the client key masked, as llm.provider shows them';

CREATE FUNCTION llm._transport_secret(name text, options jsonb, stored jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    proxy text := options ->> 'proxy';
    key text := options ->> 'client_key';
    secret jsonb := '{}';
BEGIN
    -- the masked form given back keeps what is stored
    IF proxy IS NOT NULL AND stored ->> 'proxy' IS NOT NULL
       AND proxy = llm._transport_masked(jsonb_build_object('proxy', stored ->> 'proxy')) ->> 'proxy' THEN
        proxy := stored ->> 'proxy';
    END IF;
    IF key = '[secret]' THEN
        key := stored ->> 'client_key';
    END IF;
    IF proxy ~ '^[A-Za-z0-9]+://\[secret\]@' OR (options ->> 'client_key' = '[secret]' AND key IS NULL) THEN
        RAISE EXCEPTION '"[secret]" stands for a secret of provider "%" that is not stored', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the proxy''s credentials and the client key themselves.';
    END IF;
    IF proxy IS NOT NULL THEN
        secret := secret || jsonb_build_object('proxy', proxy);
    END IF;
    IF key IS NOT NULL THEN
        secret := secret || jsonb_build_object('client_key', key);
    END IF;
    RETURN nullif(secret, '{}');
END;
$$;
COMMENT ON FUNCTION llm._transport_secret(text, jsonb, jsonb) IS 'The secret transport options of provider options (the proxy URL, client_key), a masked value standing for the one stored';

-- The names of the extra headers of checked options (their values are
-- kept with the key).
CREATE FUNCTION llm._header_names(options jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT h.name FROM jsonb_object_keys(options -> 'headers') AS h(name) ORDER BY 1);
$$;
COMMENT ON FUNCTION llm._header_names(jsonb) IS 'The names of the extra headers in provider options';

CREATE FUNCTION llm._key_env_set(name text) RETURNS boolean
AS 'MODULE_PATHNAME', 'pg_llm_key_env_set'
LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION llm._key_env_set(text) IS 'Whether a server environment variable is set (its value is never shown), for the warning of create_provider and alter_provider';

-- An api_key_env naming a variable the server does not have: every call
-- to the provider would fail, so say so now.
CREATE FUNCTION llm._warn_key_env(provider text, api_key_env text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(api_key_env, '') <> '' AND NOT llm._key_env_set(api_key_env) THEN
        RAISE WARNING 'environment variable "%" for the key of provider "%" is not set in the server', api_key_env, provider
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Calls to the provider fail until it is set.',
                  HINT = 'Set it in the environment of the PostgreSQL server and restart it, or give the key with llm.alter_provider(name, api_key => ...).';
    END IF;
END;
$$;
COMMENT ON FUNCTION llm._warn_key_env(text, text) IS 'Warn when a provider''s api_key_env names a variable the server does not have';

CREATE FUNCTION llm.create_provider(
    name text,
    protocol text,
    base_url text,
    api_key text DEFAULT NULL,
    api_key_env text DEFAULT NULL,
    options jsonb DEFAULT '{}')
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
            llm._transport_masked(opts - 'headers'), llm._header_names(opts));
    IF coalesce(api_key, '') <> '' OR opts ? 'headers' OR opts ?| ARRAY['proxy', 'client_key'] THEN
        INSERT INTO llm._provider_secret (provider, api_key, headers, transport)
        VALUES (name, nullif(api_key, ''), opts -> 'headers', llm._transport_secret(name, opts, NULL));
    END IF;
    PERFORM llm._warn_key_env(name, api_key_env);
    RETURN name;
END;
$$;
COMMENT ON FUNCTION llm.create_provider(text, text, text, text, text, jsonb) IS 'Add an LLM endpoint: protocol openai or anthropic, base_url with the version prefix, the key as a value or the name of a server environment variable; the values of extra headers are kept secret like the key. Returns its name';

CREATE FUNCTION llm.alter_provider(
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
        options = CASE WHEN opts IS NULL THEN p.options ELSE llm._transport_masked(opts - 'headers') END,
        headers = CASE WHEN opts IS NULL THEN p.headers ELSE llm._header_names(opts) END,
        enabled = coalesce(alter_provider.enabled, p.enabled),
        priority = coalesce(alter_provider.priority, p.priority),
        updated_at = now()
    WHERE p.name = alter_provider.name;
    PERFORM llm._check_batch_api(p.protocol, p.options) FROM llm.provider p WHERE p.name = alter_provider.name;
    -- new options replace the old ones, their headers and secrets included
    IF opts IS NOT NULL THEN
        INSERT INTO llm._provider_secret AS s (provider, headers, transport)
        VALUES (alter_provider.name, opts -> 'headers', llm._transport_secret(alter_provider.name, opts,
                (SELECT o.transport FROM llm._provider_secret o WHERE o.provider = alter_provider.name)))
        ON CONFLICT (provider) DO UPDATE SET headers = EXCLUDED.headers, transport = EXCLUDED.transport;
    END IF;
    -- a new key of either kind replaces the old one; '' removes it
    IF api_key IS NOT NULL THEN
        INSERT INTO llm._provider_secret AS s (provider, api_key)
        VALUES (alter_provider.name, nullif(api_key, ''))
        ON CONFLICT (provider) DO UPDATE SET api_key = EXCLUDED.api_key;
        UPDATE llm.provider p SET has_api_key = (api_key <> ''), api_key_env = NULL
        WHERE p.name = alter_provider.name;
    ELSIF api_key_env IS NOT NULL THEN
        PERFORM llm._warn_key_env(name, api_key_env);
        UPDATE llm._provider_secret s SET api_key = NULL WHERE s.provider = alter_provider.name;
        UPDATE llm.provider p SET has_api_key = false, api_key_env = nullif(alter_provider.api_key_env, '')
        WHERE p.name = alter_provider.name;
    END IF;
    DELETE FROM llm._provider_secret s
    WHERE s.provider = alter_provider.name AND s.api_key IS NULL AND s.headers IS NULL
      AND s.transport IS NULL;
END;
$$;
COMMENT ON FUNCTION llm.alter_provider(text, text, text, text, text, jsonb, boolean, integer) IS 'Change a provider; NULL arguments leave a setting as it is, api_key => '''' removes the key, and options given replace the old ones (extra headers included)';

CREATE FUNCTION llm.drop_provider(name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
    output_usd_per_mtok numeric DEFAULT NULL,
    batch_price_factor numeric DEFAULT 0.5,
    cached_input_usd_per_mtok numeric DEFAULT NULL,
    priority_price_factor numeric DEFAULT 2)
RETURNS text LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(name, '') = '' THEN
        RAISE EXCEPTION 'model name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_price_factor < 0 THEN
        RAISE EXCEPTION 'batch_price_factor cannot be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF priority_price_factor < 0 THEN
        RAISE EXCEPTION 'priority_price_factor cannot be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cached_input_usd_per_mtok < 0 THEN
        RAISE EXCEPTION 'cached_input_usd_per_mtok cannot be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF input_usd_per_mtok < 0 OR output_usd_per_mtok < 0 THEN
        RAISE EXCEPTION '% cannot be negative',
            CASE WHEN input_usd_per_mtok < 0 THEN 'input_usd_per_mtok' ELSE 'output_usd_per_mtok' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Prices are in USD per million tokens; NULL leaves the route without a price.';
    END IF;
    PERFORM llm._provider_must_exist(provider);
    -- a protocol without embeddings cannot serve a model used for them
    IF (SELECT p.protocol FROM llm.provider p WHERE p.name = add_model.provider) = 'anthropic'
       AND (EXISTS (SELECT 1 FROM llm.job j WHERE j.model = add_model.name AND j.task = 'embed')
            OR EXISTS (SELECT 1 FROM llm.queue q WHERE q.model = add_model.name AND q.task = 'embed'
                       AND q.status IN ('pending', 'running', 'submitted'))) THEN
        RAISE EXCEPTION 'model "%" is used for embeddings, which provider "%" cannot serve', name, provider
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Provider "%s" speaks the anthropic protocol, which has no embeddings endpoint; an embedding job or queued embeddings use the model.', provider),
                  HINT = 'Route the model to an OpenAI-compatible provider, or give the chat model a name of its own.';
    END IF;
    INSERT INTO llm.model AS m VALUES
        (name, provider, coalesce(nullif(upstream_model, ''), name), coalesce(priority, 100),
         input_usd_per_mtok, output_usd_per_mtok, coalesce(batch_price_factor, 0.5),
         cached_input_usd_per_mtok, coalesce(priority_price_factor, 2))
    ON CONFLICT ON CONSTRAINT model_pkey DO UPDATE SET
        upstream_model = EXCLUDED.upstream_model,
        priority = EXCLUDED.priority,
        input_usd_per_mtok = EXCLUDED.input_usd_per_mtok,
        output_usd_per_mtok = EXCLUDED.output_usd_per_mtok,
        batch_price_factor = EXCLUDED.batch_price_factor,
        cached_input_usd_per_mtok = EXCLUDED.cached_input_usd_per_mtok,
        priority_price_factor = EXCLUDED.priority_price_factor;
    -- the name's chain as calls now go through it: the primary provider
    -- first, then by priority; a disabled provider is passed over
    RETURN add_model.name || ': ' || (
        SELECT string_agg(m.provider || '/' || m.upstream_model
                          || CASE WHEN m.input_usd_per_mtok IS NULL THEN ' (no prices)' ELSE '' END
                          || CASE WHEN NOT p.enabled THEN ' (disabled)' ELSE '' END,
                          ', then '
                          ORDER BY NOT p.enabled, m.provider IS DISTINCT FROM llm.current_provider(),
                                   m.priority, m.provider)
        FROM llm.model m JOIN llm.provider p ON p.name = m.provider
        WHERE m.name = add_model.name);
END;
$$;
COMMENT ON FUNCTION llm.add_model(text, text, text, integer, numeric, numeric, numeric, numeric, numeric) IS 'Route a model name to a provider (under an upstream name, with a priority in its fallback chain, prices per million tokens, the share of them a batch request costs, the price of cached input tokens and the multiple a priority-tier call costs); adding it again updates it. Returns the name''s chain: provider/upstream model of each route in the order calls try them, those without prices said';

CREATE FUNCTION llm.drop_model(name text, provider text DEFAULT NULL) RETURNS integer
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

CREATE FUNCTION llm.use_provider(name text) RETURNS text
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

CREATE FUNCTION llm.current_provider() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT s.value FROM llm._setting s JOIN llm.provider p ON p.name = s.value
          WHERE s.key = 'primary_provider' AND p.enabled),
        (SELECT p.name FROM llm.provider p WHERE p.enabled ORDER BY p.priority, p.name LIMIT 1));
$$;
COMMENT ON FUNCTION llm.current_provider() IS 'The provider that serves pass-through model names and comes first in every chain it is part of';
