-- The response cache: its table, and a time to live per route; llm.usage
-- counts cache hits (outcome cache) and cost_report what they saved.
ALTER TABLE llm.model ADD COLUMN cache_ttl interval CHECK (cache_ttl >= interval '0');
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
ALTER TABLE llm.cache ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_cache ON llm.cache FOR SELECT
    USING (role_oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user));
DROP FUNCTION llm.cost_report(timestamptz, timestamptz);
