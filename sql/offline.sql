-- Bad input: every case gets a clear error with an SQLSTATE, and nothing
-- is sent to a provider.
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
\set VERBOSITY default
\set SHOW_CONTEXT never

-- runs a statement and shows the SQLSTATE and message of its error
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END;
$$;

-- arguments
SELECT llm.chat(NULL, 'mock');
SELECT llm.chat('', 'mock');
SELECT llm.chat('x');
SELECT llm.chat('x', '');
SELECT llm.chat_completion(NULL);
SELECT llm.chat_completion('[]', 'mock');
SELECT llm.chat_completion('{"messages": []}', 'mock');
SELECT llm.chat_completion('{"messages": [{"role": "robot", "content": "x"}]}', 'mock');
SELECT llm.chat_completion('{"messages": [{"role": "user", "content": 5}]}', 'mock');
SELECT llm.chat_completion('{"messages": [{"role": "user"}]}', 'mock');

-- options
SELECT llm.chat('x', 'mock', options => '"hot"');
SELECT llm.chat('x', 'mock', options => '[1]');
SELECT llm.chat('x', 'mock', options => 'null');
SELECT llm.chat('x', 'mock', options => '{"temperature": "hot"}');
SELECT llm.chat('x', 'mock', options => '{"temperature": 3}');
SELECT llm.chat('x', 'mock', options => '{"max_tokens": 0}');
SELECT llm.chat('x', 'mock', options => '{"max_tokens": 1.5}');
SELECT llm.chat('x', 'mock', options => '{"stop": [1, 2]}');
SELECT llm.chat('x', 'mock', options => '{"stop": ["a", "b", "c", "d", "e"]}');
SELECT llm.chat('x', 'mock', options => '{"response_format": {"type": "yaml"}}');
SELECT llm.chat('x', 'mock', options => '{"response_format": {"type": "json_schema"}}');
SELECT llm.chat('x', 'mock', options => '{"tools": [{"type": "function"}]}');
SELECT llm.chat('x', 'mock', options => '{"stream": true}');
SELECT llm.chat('x', 'mock', options => '{"messages": []}');
-- null and missing are the same
SELECT llm.chat('x', 'mock', options => '{"temperature": null, "max_tokens": null}');

-- unknown model routes and providers
SELECT llm.add_model('orphan', 'no-such-provider');
SELECT llm.drop_model('no-such-model');
SELECT llm.use_provider('no-such-provider');
SELECT llm.drop_provider('no-such-provider');
SELECT llm.alter_provider('no-such-provider', enabled => false);

-- provider definitions
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:1/v1');
SELECT llm.create_provider('bad name!', 'openai', 'http://127.0.0.1:1/v1');
SELECT llm.create_provider('p1', 'grpc', 'http://127.0.0.1:1/v1');
SELECT llm.create_provider('p1', 'openai', 'file:///etc/passwd');
SELECT llm.create_provider('p1', 'openai', 'gopher://127.0.0.1:70/');
SELECT llm.create_provider('p1', 'openai', 'http://127.0.0.1:1/v1', api_key => 'k', api_key_env => 'K');
SELECT llm.create_provider('p1', 'openai', 'http://127.0.0.1:1/v1', options => '{"timeout": 5}');
SELECT llm.create_provider('p1', 'openai', 'http://127.0.0.1:1/v1', options => '{"timeout_ms": "soon"}');
SELECT llm.create_provider('p1', 'openai', 'http://127.0.0.1:1/v1', options => '{"headers": {"Authorization": "Bearer x"}}');
SELECT llm.create_provider('p1', 'openai', 'http://127.0.0.1:1/v1', options => '{"headers": {"X-A": "a\r\nX-B: b"}}');
SELECT llm.create_provider('p1', 'openai', 'http://127.0.0.1:1/v1', options => '{"max_tokens_param": "tokens"}');
SELECT count(*) FROM llm.provider WHERE name = 'p1';

-- a key from an environment variable that is not set
SELECT llm.create_provider('envkey', 'openai', 'http://127.0.0.1:1/v1', api_key_env => 'PG_LLM_TEST_UNSET_KEY');
SELECT llm.add_model('envkey', 'envkey', 'm');
SELECT llm.chat('x', 'envkey');
SELECT llm.drop_provider('envkey');

-- a disabled provider
SELECT llm.create_provider('off', 'openai', 'http://127.0.0.1:1/v1');
SELECT llm.alter_provider('off', enabled => false);
SELECT llm.add_model('offmodel', 'off', 'm');
SELECT llm.chat('x', 'offmodel');
SELECT llm.use_provider('off');
SELECT llm.drop_provider('off');

-- settings
\set VERBOSITY sqlstate
SET llm.timeout = -1;
\set VERBOSITY default
SET llm.max_retries = 1000;
SET llm.no_such_setting = 1;

-- the SQLSTATE of each kind of error
SELECT q, pg_temp.try(q) FROM (VALUES
  ($$SELECT llm.chat(NULL, 'mock')$$),
  ($$SELECT llm.chat('', 'mock')$$),
  ($$SELECT llm.chat('x', '')$$),
  ($$SELECT llm.chat('x', 'mock', options => '{"temperature": "hot"}')$$),
  ($$SELECT llm.chat_completion('{"messages": 1}', 'mock')$$),
  ($$SELECT llm.create_provider('p1', 'openai', 'file:///etc/passwd')$$),
  ($$SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:1/v1')$$),
  ($$SELECT llm.use_provider('no-such-provider')$$)
) AS t(q);
