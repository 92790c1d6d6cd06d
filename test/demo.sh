#!/usr/bin/env bash
# The main job on the bundled local provider, from nothing: install what is
# missing, build and install pg_llm, start a private PostgreSQL instance
# (with the queue worker) and the local mock provider, enrich a table of
# reviews with llm.chat, stream a reply row by row, drain a queue of 2,000
# tickets into their table with the background worker, and show the
# results and the usage inventory.  Everything it starts is stopped when it
# ends.
source "$(dirname "$0")/lib.sh"
ensure_packages
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'"
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
-- the local provider reads its pacing from the upstream model name
SELECT llm.add_model('cheap-drip', 'local', 'mock?chunk_delay=80',
                     input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.60);
SELECT llm.add_model('cheap-50ms', 'local', 'mock?latency=50',
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
                       'cheap-drip') AS chunk;
SQL
log "draining a queue of 2,000 tickets with the background worker (50 ms per call, 50 in flight)"
run <<'SQL'
CREATE TABLE tickets (id int PRIMARY KEY, body text NOT NULL, triage text);
INSERT INTO tickets (id, body)
SELECT g, CASE g % 3 WHEN 0 THEN 'The app crashes on login, terrible'
                     WHEN 1 THEN 'Love the new dashboard, works great'
                     ELSE 'How do I export my data?' END
FROM generate_series(1, 2000) g;
SELECT count(llm.enqueue('Triage the sentiment of this ticket: ' || body, 'cheap-50ms',
                         target_table => 'tickets', target_column => 'triage',
                         target_key => jsonb_build_object('id', id))) AS enqueued
FROM tickets;
SQL
start=$(date +%s.%N)
for i in $(seq 1 600); do
  left=$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')")
  [ "$left" = 0 ] && break
  sleep 0.1
done
end=$(date +%s.%N)
run <<SQL
SELECT * FROM llm.queue_status;
SELECT triage, count(*) FROM tickets GROUP BY triage ORDER BY triage;
SELECT min(started_at) AS first_claim, max(finished_at) AS last_done,
       round(count(*) / extract(epoch FROM max(finished_at) - min(started_at))) AS items_per_second
FROM llm.queue WHERE status = 'done';
SELECT pid, kind, database, completed, failed FROM llm.workers;
SQL

log "the usage inventory (every call above, by mode)"
sleep 0.5
run -c "SELECT mode, provider, model, calls, input_tokens, output_tokens, cost_usd FROM llm.usage_summary"
log "done"
