#!/usr/bin/env bash
# The response cache, side by side in one run against one mock:
#  - hit latency: llm.chat of a cached reply, each call timed in one
#    session (median and 95th percentile), against the same calls with
#    the option cache false against the mock at zero latency;
#  - coalescing: 10 sessions sending 100 identical deterministic prompts
#    each through chat_many at once (the mock answers in 200 ms): provider
#    calls and wall time, cache on and off;
#  - a job whose rows repeat 50 % of their prompts (each prompt twice),
#    run by the worker with the cache and without (the mock answers in
#    20 ms): provider calls, seconds until every row has its answer, rows
#    per second.
# Usage: bash test/bench/bench_cache.sh [--calls N] [--rows N]
source "$(dirname "$0")/../lib.sh"
calls=2000
rows=2000
while [ $# -gt 0 ]; do
  case $1 in
    --calls) calls=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    *) echo "usage: $0 [--calls N] [--rows N]" >&2; exit 2 ;;
  esac
done
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" "llm.worker_naptime = '100ms'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('m', 'mock', 'mock', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
SELECT llm.add_model('slow', 'mock', 'mock?latency=200', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
SELECT llm.add_model('job', 'mock', 'mock?latency=20', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
CREATE TABLE lat (kind text, us float8);
CREATE TABLE tickets (id int PRIMARY KEY, body text, label text);
INSERT INTO tickets SELECT g, 'Classify ticket ' || (g % ($rows / 2)) FROM generate_series(1, $rows) g;
SQL
mock_requests() {
  curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'
}
reset_mock() { curl -s -X POST "http://127.0.0.1:$MOCK_PORT/_reset" >/dev/null; }
now() { date +%s.%N; }

echo
echo "== hit latency: $calls sequential llm.chat calls, each timed (µs)"
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT llm.chat('What is the capital of France?', 'm', NULL, '{"temperature": 0}');
DO \$\$
DECLARE t0 timestamptz;
BEGIN
    FOR i IN 1..$calls LOOP
        t0 := clock_timestamp();
        PERFORM llm.chat('What is the capital of France?', 'm', NULL, '{"temperature": 0}');
        INSERT INTO lat VALUES ('hit', extract(epoch FROM clock_timestamp() - t0) * 1e6);
        t0 := clock_timestamp();
        PERFORM llm.chat('What is the capital of France?', 'm', NULL, '{"temperature": 0, "cache": false}');
        INSERT INTO lat VALUES ('miss (mock at zero latency)', extract(epoch FROM clock_timestamp() - t0) * 1e6);
    END LOOP;
END \$\$;
SQL
psql -X -q -c "SELECT kind, count(*) AS calls,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us)::numeric, 1) AS median_us,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY us)::numeric, 1) AS p95_us
FROM lat GROUP BY kind ORDER BY kind"

echo "== coalescing: 10 sessions x 100 identical prompts through chat_many at once (the mock answers in 200 ms)"
for mode in on off; do
  reset_mock
  psql -X -q -c "TRUNCATE llm.cache" >/dev/null
  opts='{"temperature": 0}'
  [ $mode = off ] && opts='{"temperature": 0, "cache": false}'
  t0=$(now)
  pids=()
  for s in $(seq 1 10); do
    psql -X -Atq -c "SELECT count(*) FROM llm.chat_many(array_fill('Is the sky blue?'::text, ARRAY[100]), 'slow', NULL, '$opts')" >/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  t1=$(now)
  printf 'cache %-3s: %4s provider calls, %6.2f s\n' $mode "$(mock_requests)" "$(echo "$t1 - $t0" | bc)"
done

echo "== a job of $rows rows whose prompts repeat 50 % (each twice), run by the worker (the mock answers in 20 ms)"
for mode in on off; do
  reset_mock
  opts='{"temperature": 0}'
  [ $mode = off ] && opts='{"temperature": 0, "cache": false}'
  psql -X -q -c "TRUNCATE llm.cache" -c "UPDATE tickets SET label = NULL" \
    -c "SELECT llm.drop_job(name) FROM llm.job" \
    -c "SELECT llm.create_job('bench', 'tickets', '{id}', '{body}', 'label', model => 'job', options => '$opts', track_changes => false)" >/dev/null
  t0=$(now)
  psql -X -q -c "SELECT llm.run_job('bench')" >/dev/null
  for i in $(seq 1 6000); do
    [ "$(psql -X -Atq -c "SELECT count(*) FROM tickets WHERE label IS NULL")" = 0 ] && break
    sleep 0.05
  done
  t1=$(now)
  secs=$(echo "$t1 - $t0" | bc)
  printf 'cache %-3s: %5s provider calls, %6.2f s, %7.1f rows/s\n' $mode "$(mock_requests)" "$secs" "$(echo "$rows / $secs" | bc -l)"
done
