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
