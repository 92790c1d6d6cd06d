-- Install the extension and point providers at the local mock provider,
-- whose port the test runner exports as MOCK_PORT.
\getenv mock_port MOCK_PORT
\set openai_url 'http://127.0.0.1:' :mock_port '/v1'
\set anthropic_url 'http://127.0.0.1:' :mock_port '/anthropic/v1'
CREATE EXTENSION pg_llm;
\dx pg_llm
SELECT llm.create_provider('mock', 'openai', :'openai_url', api_key => 'sk-mock');
SELECT llm.create_provider('claude', 'anthropic', :'anthropic_url', api_key => 'sk-mock');
-- a relay that answers under other model names, used for fallback and switching
SELECT llm.create_provider('relay', 'openai', :'openai_url', api_key => 'sk-mock',
                           options => '{"max_retries": 0}');
SELECT llm.alter_provider('relay', priority => 200);
SELECT name, protocol, enabled, priority, has_api_key, api_key_env, options FROM llm.provider ORDER BY name;
SELECT llm.current_provider();
SELECT llm.use_provider('mock');
SELECT llm.current_provider();
