#!/usr/bin/env bash
# The main job on the bundled local provider, from nothing: install what is
# missing, build and install pg_llm, start a private PostgreSQL instance
# (with the queue worker) and the local mock provider, standing for two
# providers: "openai", the dear one the team paid before, and "relay", a
# cheaper relay with a batch API (and "backup", a second relay).  Then: enrich a table of reviews with
# llm.chat, stream a reply row by row, estimate a queue before sending it,
# drain a queue of 2,000 tickets into their table with the background
# worker, run a nightly job through the relay's batch API, serve a model
# whose first route is down by its fallback, answer a repeated question
# from the response cache, and end with the bill: what every call paid
# against what OpenAI's realtime prices would have cost, and where the
# saving came from.  Everything it starts is stopped when it ends.
source "$(dirname "$0")/lib.sh"
ensure_packages
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'"
start_mock --latency 20

run() { psql -X -v ON_ERROR_STOP=1 "$@"; }
# wait_for SQL: until the query returns t (at most a minute)
wait_for() {
  local i
  for i in $(seq 1 600); do
    [ "$(psql -X -Atq -c "$1")" = t ] && return 0
    sleep 0.1
  done
  return 1
}

log "creating the extension and two providers (both on the local mock)"
run -q <<SQL
CREATE EXTENSION pg_llm;
-- the local mock speaks the OpenAI protocol; a real provider differs only
-- in base_url and key (see the README).  openai: what the team paid before
SELECT llm.create_provider('openai', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1',
                           api_key => 'sk-mock');
-- relay: a tenth of the price, and a synchronous batch API
SELECT llm.create_provider('relay', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1',
                           api_key => 'sk-mock', options => '{"batch_api": "inline"}');
-- every model name on both, priced; the relay serves first
SELECT llm.add_model('cheap', 'openai', 'mock-small', priority => 2,
                     input_usd_per_mtok => 2.50, output_usd_per_mtok => 10.00);
SELECT llm.add_model('cheap', 'relay', 'mock-small', priority => 1,
                     input_usd_per_mtok => 0.25, output_usd_per_mtok => 1.00);
-- the local provider reads its pacing from the upstream model name
SELECT llm.add_model('cheap-drip', 'relay', 'mock?chunk_delay=80',
                     input_usd_per_mtok => 0.25, output_usd_per_mtok => 1.00);
SELECT llm.add_model('cheap-drip', 'openai', 'mock?chunk_delay=80', priority => 200,
                     input_usd_per_mtok => 2.50, output_usd_per_mtok => 10.00);
SELECT llm.add_model('cheap-50ms', 'relay', 'mock?latency=50',
                     input_usd_per_mtok => 0.25, output_usd_per_mtok => 1.00);
SELECT llm.add_model('cheap-50ms', 'openai', 'mock?latency=50', priority => 200,
                     input_usd_per_mtok => 2.50, output_usd_per_mtok => 10.00);
-- the relay comes first in every chain it is part of
SELECT llm.use_provider('relay');
-- smart: its first route answers 503 (down), a second relay takes over
SELECT llm.create_provider('backup', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('smart', 'openai', 'mock?fail=503&retry_after=0', priority => 1,
                     input_usd_per_mtok => 2.50, output_usd_per_mtok => 10.00);
SELECT llm.add_model('smart', 'backup', 'mock-large', priority => 2,
                     input_usd_per_mtok => 0.50, output_usd_per_mtok => 2.00);
SQL
run -c "SELECT name, provider, upstream_model, priority, input_usd_per_mtok, output_usd_per_mtok FROM llm.model ORDER BY name, priority"

log "enriching a table with llm.chat"
run <<'SQL'
CREATE TABLE reviews (id int PRIMARY KEY, body text NOT NULL, sentiment text, summary text);
INSERT INTO reviews (id, body) VALUES
  (1, 'Love it. Fast delivery and it works great.'),
  (2, 'Broken on arrival, terrible support, I want a refund.'),
  (3, 'It is a phone. It makes calls.'),
  (4, 'Excellent battery, nice screen, happy with it.'),
  (5, 'Slow, crashes twice a day. Awful.');
\timing on
UPDATE reviews
   SET sentiment = llm.chat('Classify the sentiment of this review: ' || body,
                            'cheap', system => 'Answer with one word.', options => '{"tag": "demo"}')
 WHERE sentiment IS NULL;
\timing off
SELECT id, sentiment, body FROM reviews ORDER BY id;
SQL

log "streaming a reply row by row (each line is printed as it arrives)"
run <<'SQL'
\set FETCH_COUNT 1
SELECT llm.chat_stream('pg_llm streams this reply to the client one chunk per row while it is generated',
                       'cheap-drip') AS chunk;
SQL

log "2,000 tickets: what they would cost, on each route, before anything is sent"
run <<'SQL'
CREATE TABLE tickets (id int PRIMARY KEY, body text NOT NULL, triage text);
INSERT INTO tickets (id, body)
SELECT g, CASE g % 3 WHEN 0 THEN 'The app crashes on login, terrible'
                     WHEN 1 THEN 'Love the new dashboard, works great'
                     ELSE 'How do I export my data?' END
FROM generate_series(1, 2000) g;
SELECT provider, requests, input_tokens, output_tokens, cost_usd, batch_cost_usd
FROM llm.estimate(array(SELECT 'Triage the sentiment of this ticket: ' || body FROM tickets),
                  'cheap-50ms', NULL, '{"max_tokens": 8}');
SQL

log "draining them with the background worker (50 ms per call, 50 in flight)"
run <<'SQL'
SELECT count(llm.enqueue('Triage the sentiment of this ticket: ' || body, 'cheap-50ms',
                         target_table => 'tickets', target_column => 'triage',
                         target_key => jsonb_build_object('id', id),
                         options => '{"max_tokens": 8, "tag": "ticket-triage"}')) AS enqueued
FROM tickets;
SQL
wait_for "SELECT NOT EXISTS (SELECT 1 FROM llm.queue WHERE status IN ('pending', 'running'))" ||
  log "the queue did not drain within a minute"
run <<SQL
SELECT * FROM llm.queue_status;
SELECT triage, count(*) FROM tickets GROUP BY triage ORDER BY triage;
SELECT min(started_at) AS first_claim, max(finished_at) AS last_done,
       round(count(*) / extract(epoch FROM max(finished_at) - min(started_at))) AS items_per_second
FROM llm.queue WHERE status = 'done';
SELECT pid, kind, database, completed, failed FROM llm.workers;
SQL

log "a nightly job through the relay's batch API (half the price)"
run <<'SQL'
SELECT llm.create_job('nightly-summary', 'reviews', '{id}', 'Summarize in five words: {body}', 'summary',
                      model => 'cheap', via => 'batch_api', provider => 'relay',
                      options => '{"max_tokens": 16}', track_changes => false);
SELECT * FROM llm.estimate_job('nightly-summary');
SELECT llm.run_job('nightly-summary') AS queued;
SQL
wait_for "SELECT done = 5 FROM llm.job_status WHERE job = 'nightly-summary'" ||
  log "the batch job did not finish within a minute"
run <<'SQL'
SELECT job, done, failed, percent_done, cost_usd, cost_to_finish_usd FROM llm.job_status;
SELECT id, provider, kind, status, requests, succeeded, submitted_at, finished_at FROM llm.batches;
SELECT id, summary FROM reviews ORDER BY id;
SQL

log "a fallback: smart's first route is down, the next one serves"
run <<'SQL'
SELECT llm.chat('Explain MVCC in one sentence', 'smart');
SQL

log "the response cache: a repeated deterministic question is asked once"
run <<'SQL'
SELECT llm.chat('What is 2 + 2?', 'cheap', options => '{"temperature": 0}') FROM generate_series(1, 3);
SQL

wait_for "SELECT count(*) >= 2015 FROM llm.usage" || log "some usage rows are missing"
log "the usage inventory (every call above, by mode)"
run -c "SELECT level, mode, provider, model, calls, served_by_fallback, from_cache, cost_usd FROM llm.usage_summary WHERE level <> 'model' OR model NOT LIKE 'cheap-%'"
run -c "SELECT ts, mode, outcome, provider, model, fallback, http_status, attempts, cost_usd FROM llm.usage_log WHERE model = 'smart'"
log "the bill: what every call paid, against what OpenAI's realtime prices would have cost"
run <<'SQL'
SELECT coalesce(model, 'total') AS model, calls, paid_usd, baseline_usd, saved_usd, saved_pct,
       saved_provider_usd AS by_provider, saved_batch_usd AS by_batch, saved_cache_usd AS by_cache,
       unpriced_calls
FROM llm.cost_report('openai');
SELECT coalesce(tag, '(none)') AS tag, calls, paid_usd, saved_usd
FROM llm.cost_report('openai', by => 'tag') WHERE level = 'tag';
SQL
log "done"
