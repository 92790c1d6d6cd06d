-- The response cache: replies kept for identical requests, served without
-- a provider call (src/cache.c writes and reads it as the extension's
-- owner).

CREATE TABLE llm.cache (
    key             bytea PRIMARY KEY,
    role_oid        oid NOT NULL,
    scope           text NOT NULL CHECK (scope IN ('role', 'shared')),
    model           text NOT NULL,
    provider        text NOT NULL,
    upstream_model  text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('text', 'response')),
    reply           text NOT NULL,
    finish_reason   text,
    input_tokens    integer,
    output_tokens   integer,
    cached_input_tokens integer,
    reasoning_tokens integer,
    cost_usd        numeric(14, 8),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz
);
CREATE INDEX cache_created ON llm.cache (created_at);
COMMENT ON TABLE llm.cache IS 'The response cache: one reply per request kept for llm.cache_ttl (or its model''s cache_ttl), about llm.cache_max_rows of them; each role sees the rows of its own requests; TRUNCATE empties it (calls then miss)';
COMMENT ON COLUMN llm.cache.key IS 'SHA-256 of the kind of reply, the role (none when shared), the provider, the upstream model and the request with its keys sorted (messages, system prompt, the options that change the reply)';
COMMENT ON COLUMN llm.cache.role_oid IS 'The role whose request the reply answered';
COMMENT ON COLUMN llm.cache.scope IS 'role: served to that role only; shared: to every role that sends the same request (llm.cache_scope when it was kept)';
COMMENT ON COLUMN llm.cache.kind IS 'text: the reply of llm.chat and llm.chat_many; response: the whole response of llm.chat_completion';
COMMENT ON COLUMN llm.cache.cost_usd IS 'What the call that got the reply cost: what each hit saves';
COMMENT ON COLUMN llm.cache.expires_at IS 'When it stops being served (NULL: when it is pruned for room)';
ALTER TABLE llm.cache ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_cache ON llm.cache FOR SELECT
    USING (role_oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));

CREATE FUNCTION llm.prune_cache(max_rows bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keep bigint := coalesce(max_rows, nullif(current_setting('llm.cache_max_rows', true), '')::bigint, 100000);
    expired bigint;
    over bigint;
BEGIN
    IF keep < 0 THEN
        RAISE EXCEPTION 'max_rows must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM llm.cache WHERE expires_at <= statement_timestamp();
    GET DIAGNOSTICS expired = ROW_COUNT;
    DELETE FROM llm.cache WHERE key IN (
        SELECT c.key FROM llm.cache c ORDER BY c.created_at DESC, c.key OFFSET keep);
    GET DIAGNOSTICS over = ROW_COUNT;
    RETURN expired + over;
END;
$$;
COMMENT ON FUNCTION llm.prune_cache(bigint) IS 'Delete the expired replies of llm.cache and the oldest beyond max_rows (default llm.cache_max_rows); returns the number deleted. Calls that keep replies run it as they go';

CREATE FUNCTION llm.cache_status(OUT flights_calling integer, OUT flights_answered integer,
                                 OUT coalesced bigint)
AS 'MODULE_PATHNAME', 'pg_llm_cache_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm.cache_status() IS 'Identical requests in flight at once, sent once: the flights in shared memory whose first call is with its provider, those answered whose reply is not yet in llm.cache, and the calls served by a flight since the server started (NULL without preloading)';
