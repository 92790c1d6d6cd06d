-- Keys stay secret from every role but the extension owner, and only
-- administrators change providers.
-- the mock reads its directives from the model name (mock?fail=500):
-- such names have no route, so they go unchanged to the primary provider
SET llm.pass_through = on;
CREATE ROLE regress_llm_analyst LOGIN;
GRANT USAGE ON SCHEMA llm TO regress_llm_analyst;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb),
                          llm.chat_completion(jsonb, text) TO regress_llm_analyst;
GRANT SELECT ON llm.provider, llm.model TO regress_llm_analyst;
SELECT llm.create_provider('secret', 'openai', 'http://127.0.0.1:1/v1', api_key => 'sk-very-secret-key');

SELECT llm.add_model('secret-model', 'secret', 'm');
SET ROLE regress_llm_analyst;
-- calls work
SELECT llm.chat('as regress_llm_analyst', 'mock');
-- the configuration can be read, but no key
SELECT name, has_api_key FROM llm.provider WHERE name = 'secret';
SELECT * FROM llm._provider_secret;
SELECT llm.create_provider('mine', 'openai', 'http://127.0.0.1:1/v1');
SELECT llm.alter_provider('secret', base_url => 'http://127.0.0.1:2/v1');
SELECT llm.use_provider('secret');
UPDATE llm.provider SET base_url = 'http://127.0.0.1:2/v1';
INSERT INTO llm.model VALUES ('m', 'secret', 'm');
-- the key does not appear in errors from the provider that uses it
\set VERBOSITY terse
SELECT llm.chat('x', 'secret-model');
\set VERBOSITY default
RESET ROLE;

-- a provider that echoes the key back in its error message is redacted
SELECT base_url AS openai_url FROM llm.provider WHERE name = 'mock' \gset
SELECT llm.create_provider('leaky', 'openai', :'openai_url', api_key => 'sk-mock');
SELECT llm.add_model('leaky', 'leaky', 'mock?fail=400&message=bad%20key%20sk-mock%20given');
SET ROLE regress_llm_analyst;
SELECT llm.chat('x', 'leaky');
RESET ROLE;
SELECT llm.drop_provider('leaky');
-- nor in pg_stat_activity or EXPLAIN of a call
SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%sk-very-secret%' AND pid <> pg_backend_pid();
EXPLAIN (VERBOSE, COSTS OFF) SELECT llm.chat('x', 'mock');
SELECT llm.drop_provider('secret');

-- functions are not granted to PUBLIC
CREATE ROLE regress_llm_nobody LOGIN;
SET ROLE regress_llm_nobody;
SELECT llm.chat('x', 'mock');
RESET ROLE;
SELECT p.proname, has_function_privilege('regress_llm_nobody', p.oid, 'EXECUTE') AS public_can_execute
FROM pg_proc p WHERE p.pronamespace = 'llm'::regnamespace AND p.proname NOT LIKE '\_%' ORDER BY 1;
DROP ROLE regress_llm_nobody;
REVOKE ALL ON llm.provider, llm.model FROM regress_llm_analyst;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA llm FROM regress_llm_analyst;
REVOKE ALL ON SCHEMA llm FROM regress_llm_analyst;
DROP ROLE regress_llm_analyst;
