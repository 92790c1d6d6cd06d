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

CREATE FUNCTION llm.chat_many(prompts text[], model text DEFAULT NULL, system text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS TABLE (ord integer, content text, error text)
AS 'MODULE_PATHNAME', 'pg_llm_chat_many'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000;
COMMENT ON FUNCTION llm.chat_many(text[], text, text, jsonb) IS 'Send many prompts at once (up to llm.many_concurrency in flight), each with retries and fallback; one row per prompt as it completes: its place in the array, the reply, or the error of a prompt that failed for good';

-- Answers with a shape: a label, a record, a yes or no, validated
CREATE FUNCTION llm.classify(input text, labels text[], model text DEFAULT NULL,
                             instructions text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'pg_llm_classify'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.classify(text, text[], text, text, jsonb) IS 'Classify the input: the answer is always one of labels (asked for with the provider''s structured output and validated); a NULL input gives NULL';

CREATE FUNCTION llm.extract(input text, schema jsonb, model text DEFAULT NULL,
                            instructions text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'pg_llm_extract'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.extract(text, jsonb, text, text, jsonb) IS 'Extract a JSON object valid against schema (a JSON schema with "type": "object" at its root) from the input; a NULL input gives NULL';

CREATE FUNCTION llm.is_true(input text, question text, model text DEFAULT NULL, options jsonb DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'pg_llm_is_true'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION llm.is_true(text, text, text, jsonb) IS 'Answer a yes-or-no question about the input as a boolean; a NULL input gives NULL';

-- Traffic control per provider, held in shared memory for the cluster
CREATE FUNCTION llm._provider_status(
    OUT provider text, OUT enabled boolean,
    OUT rpm_limit integer, OUT requests_last_minute bigint,
    OUT tpm_limit integer, OUT tokens_last_minute bigint,
    OUT cooldown_until timestamptz, OUT cooldown_reason text,
    OUT waiting integer, OUT rate_limited_last_minute bigint, OUT last_rate_limited_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pg_llm_provider_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._provider_status() IS 'Per provider: its limits and the last minute''s requests and tokens against them, its cooldown and why, the callers waiting, and its recent 429s (the view llm.provider_status shows it)';
CREATE FUNCTION llm.clear_cooldown(provider text) RETURNS void
AS 'MODULE_PATHNAME', 'pg_llm_clear_cooldown'
LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION llm.clear_cooldown(text) IS 'End a provider''s cooldown, and its time out of quota, now, for the whole cluster (after adding credit, say)';
CREATE FUNCTION llm._provider_transport(OUT provider text, OUT proxy text, OUT proxy_source text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'pg_llm_provider_transport'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION llm._provider_transport() IS 'Per provider: the proxy its requests go through, credentials removed (NULL: direct), and where it is configured: its proxy option or the server''s environment (the view llm.provider_status shows it)';
CREATE VIEW llm.provider_status AS
    SELECT s.*, t.proxy, t.proxy_source
    FROM llm._provider_status() s LEFT JOIN llm._provider_transport() t ON t.provider = s.provider
    ORDER BY s.provider;
COMMENT ON VIEW llm.provider_status IS 'Per provider, cluster-wide: rpm and tpm limits with the requests and tokens of the last minute, the cooldown (until and why), the callers waiting for their turn, the 429s of the last minute, and the proxy its requests go through (from its option or the server''s environment): what to look at when calls get slow';
