-- The opening of every findings*.sql (included with \ir): one line per
-- finding, errors kept going, pg_llm created with the mock provider
-- (psql variable openai_url).
\set ON_ERROR_STOP 0
\set VERBOSITY terse
\pset format unaligned
\pset tuples_only on
\pset fieldsep ' | '
SET client_min_messages = error;
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', :'openai_url', api_key => 'sk-mock') IS NULL AS created \g /dev/null
