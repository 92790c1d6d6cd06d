#!/usr/bin/env bash
# The main job on the bundled local provider, from nothing: install what is
# missing, build and install pg_llm, start a private PostgreSQL instance and
# the local mock provider, enrich a table of reviews with llm.chat, stream
# a reply row by row, and show the results.  Everything it starts is
# stopped when it ends.
source "$(dirname "$0")/lib.sh"
ensure_packages
build_install
start_postgres
start_mock --latency 20

run() { psql -X -v ON_ERROR_STOP=1 "$@"; }

log "creating the extension and a provider"
run -q <<SQL
CREATE EXTENSION pg_llm;
-- the local provider speaks the OpenAI protocol; a real one differs only in
-- base_url and key (see the README)
SELECT llm.create_provider('local', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1',
                           api_key => 'sk-mock');
SELECT llm.add_model('cheap', 'local', 'mock-small',
                     input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.60);
SQL

log "enriching a table with llm.chat"
run <<'SQL'
CREATE TABLE reviews (id int PRIMARY KEY, body text NOT NULL, sentiment text);
INSERT INTO reviews (id, body) VALUES
  (1, 'Love it. Fast delivery and it works great.'),
  (2, 'Broken on arrival, terrible support, I want a refund.'),
  (3, 'It is a phone. It makes calls.'),
  (4, 'Excellent battery, nice screen, happy with it.'),
  (5, 'Slow, crashes twice a day. Awful.');
\timing on
UPDATE reviews
   SET sentiment = llm.chat('Classify the sentiment of this review: ' || body,
                            'cheap', system => 'Answer with one word.');
\timing off
SELECT id, sentiment, body FROM reviews ORDER BY id;
SQL

log "streaming a reply row by row (each line is printed as it arrives)"
run <<'SQL'
\set FETCH_COUNT 1
SELECT llm.chat_stream('pg_llm streams this reply to the client one chunk per row while it is generated',
                       'mock?chunk_delay=80') AS chunk;
SQL
log "done"
