#!/usr/bin/env bash
# The response cache across sessions: identical requests in flight at once
# are one provider call (ten sessions, sync calls and chat_many); a first
# call that fails lets a waiter send its own; a cache table truncated
# mid-run costs only misses; the worker serves queue items from the cache
# and coalesces them with sessions.  The mock counts what it receives.
source "$(dirname "$0")/lib.sh"
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" "llm.worker_naptime = '200ms'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
                           options => '{"max_retries": 0}');
-- slow enough that the sessions' identical requests are in flight together
SELECT llm.add_model('slow', 'mock', 'mock?latency=400', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('flaky', 'mock', 'mock?latency=300&fail=400&times=1', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('fast', 'mock', 'mock', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
CREATE TABLE answers (id int PRIMARY KEY, q text, a text);
SQL
pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
mock_requests() {
  curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'
}
reset_mock() {
  curl -s -X POST "http://127.0.0.1:$MOCK_PORT/_reset" >/dev/null
}
wait_usage() {  # $1: condition on llm.usage
  for i in $(seq 1 100); do
    [ "$(psql -X -Atq -c "SELECT $1 FROM llm.usage")" = t ] && return 0
    sleep 0.1
  done
  return 1
}

# 1. ten sessions, 100 identical deterministic prompts each through
# chat_many: 1,000 prompts, one provider call
reset_mock
pids=()
for s in $(seq 1 10); do
  psql -X -Atq -c "SELECT count(*) FILTER (WHERE content IS NOT NULL) || ' ' || count(DISTINCT content) || ' ' || count(error)
                    FROM llm.chat_many(array_fill('Is the sky blue?'::text, ARRAY[100]), 'slow', NULL, '{\"temperature\": 0}')" \
    > "$SCRATCH/many$s.out" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
answered=$(cat "$SCRATCH"/many*.out | awk '{s += $1} END {print s}')
check "1,000 identical prompts from 10 sessions (chat_many) answered: $answered" $([ "$answered" = 1000 ] && echo 1 || echo 0)
n=$(mock_requests)
check "and they made $n provider call (1)" $([ "$n" = 1 ] && echo 1 || echo 0)
wait_usage "count(*) FILTER (WHERE model = 'slow') = 1000" || true
read -r ok hits cost < <(psql -X -Atq -F ' ' -c "SELECT count(*) FILTER (WHERE outcome = 'ok'), count(*) FILTER (WHERE outcome = 'cache'), sum(cost_usd) FILTER (WHERE outcome = 'cache') FROM llm.usage WHERE model = 'slow'")
coalesced=$(psql -X -Atq -c "SELECT coalesced FROM llm.cache_status()")
check "llm.cache_status() counts $coalesced calls served by a flight (some of the 999)" \
  $([ "$coalesced" -ge 1 ] && [ "$coalesced" -le 999 ] && echo 1 || echo 0)
check "usage: $ok paid call, $hits cache hits at cost $cost" $([ "$ok" = 1 ] && [ "$hits" = 999 ] && [ "$cost" = 0.00000000 ] && echo 1 || echo 0)

# 2. the same with sync calls: ten sessions, ten calls each, a new prompt
reset_mock
pids=()
for s in $(seq 1 10); do
  psql -X -Atq -c "SELECT count(llm.chat('Is grass green?', 'slow', NULL, '{\"temperature\": 0}')) FROM generate_series(1, 10)" \
    > "$SCRATCH/sync$s.out" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
answered=$(cat "$SCRATCH"/sync*.out | awk '{s += $1} END {print s}')
n=$(mock_requests)
check "100 identical llm.chat calls from 10 sessions: $answered answered, $n provider call" \
  $([ "$answered" = 100 ] && [ "$n" = 1 ] && echo 1 || echo 0)

# 3. the first call fails (HTTP 400, once): its waiters are freed and one
# of them sends its own request, which the rest then share
reset_mock
pids=()
for s in $(seq 1 5); do
  psql -X -Atq -c "SELECT llm.chat('Is snow white?', 'flaky', NULL, '{\"temperature\": 0, \"on_error\": \"null\"}') IS NOT NULL" \
    > "$SCRATCH/flaky$s.out" 2>&1 &
  pids+=($!)
  [ $s = 1 ] && sleep 0.1
done
wait "${pids[@]}"
good=$(cat "$SCRATCH"/flaky*.out | grep -c '^t$' || true)
bad=$(cat "$SCRATCH"/flaky*.out | grep -c '^f$' || true)
n=$(mock_requests)
check "a failed first call: $bad failed, $good answered, $n provider calls (1 failed, 1 good)" \
  $([ "$bad" = 1 ] && [ "$good" = 4 ] && [ "$n" = 2 ] && echo 1 || echo 0)

# 4. TRUNCATE llm.cache while sessions call (each call its own
# transaction, so the truncations come between them): only misses, no
# error, every call answered
reset_mock
psql -X -q -c "TRUNCATE llm.cache" >/dev/null
for i in $(seq 1 300); do
  echo "SELECT llm.chat('Repeat ' || $((i % 10)), 'fast', NULL, '{\"temperature\": 0}') IS NOT NULL, pg_sleep(0.002);"
done > "$SCRATCH/trunc.sql"
pids=()
for s in 1 2 3; do
  psql -X -Atq -v ON_ERROR_STOP=1 -f "$SCRATCH/trunc.sql" > "$SCRATCH/trunc$s.out" 2>&1 &
  pids+=($!)
done
for t in 1 2 3 4 5; do
  sleep 0.15
  psql -X -q -c "TRUNCATE llm.cache" >/dev/null 2>&1
done
rc=0
wait "${pids[@]}" || rc=1
answered=$(cat "$SCRATCH"/trunc*.out | grep -c '^t|' || true)
n=$(mock_requests)
check "900 calls of 10 prompts while the cache was truncated 5 times: $answered answered, no error ($rc), $n provider calls (10 to 180: misses only)" \
  $([ $rc = 0 ] && [ "$answered" = 900 ] && [ "$n" -ge 10 ] && [ "$n" -le 180 ] && echo 1 || echo 0)

# 5. the worker: 200 queued items with one prompt, and sessions asking
# the same at once, make one provider call; every row gets its answer;
# then the same items queued again are answered from the table
reset_mock
psql -X -q -c "TRUNCATE llm.cache" -c "INSERT INTO answers SELECT g, 'Is the sea salty?' FROM generate_series(1, 200) g" >/dev/null
psql -X -q -c "SELECT count(llm.enqueue(q, 'slow', options => '{\"temperature\": 0}', target_table => 'answers', target_column => 'a', target_key => jsonb_build_object('id', id))) FROM answers" >/dev/null &
qpid=$!
pids=()
for s in 1 2 3; do
  psql -X -Atq -c "SELECT llm.chat('Is the sea salty?', 'slow', NULL, '{\"temperature\": 0}') IS NOT NULL" > "$SCRATCH/w$s.out" 2>&1 &
  pids+=($!)
done
wait $qpid "${pids[@]}"
for i in $(seq 1 200); do
  [ "$(psql -X -Atq -c "SELECT count(*) FROM answers WHERE a IS NULL")" = 0 ] && break
  sleep 0.1
done
filled=$(psql -X -Atq -c "SELECT count(*) FROM answers WHERE a IS NOT NULL")
n=$(mock_requests)
check "200 queue items and 3 sessions with one prompt: $filled rows answered, $n provider call" \
  $([ "$filled" = 200 ] && [ "$n" = 1 ] && echo 1 || echo 0)
wait_usage "count(*) FILTER (WHERE mode = 'queue' AND model = 'slow') >= 200" || true
hits=$(psql -X -Atq -c "SELECT count(*) FROM llm.usage WHERE mode = 'queue' AND model = 'slow' AND outcome = 'cache'")
rows=$(psql -X -Atq -c "SELECT count(*) FROM llm.cache WHERE model = 'slow'")
check "queue usage: $hits cache hits (199 or 200), the reply kept in $rows row of llm.cache" \
  $([ "$hits" -ge 199 ] && [ "$rows" = 1 ] && echo 1 || echo 0)
reset_mock
psql -X -q -c "UPDATE answers SET a = NULL" \
  -c "SELECT count(llm.enqueue(q, 'slow', options => '{\"temperature\": 0}', target_table => 'answers', target_column => 'a', target_key => jsonb_build_object('id', id), if_queued => 'add')) FROM answers" >/dev/null
for i in $(seq 1 200); do
  [ "$(psql -X -Atq -c "SELECT count(*) FROM answers WHERE a IS NULL")" = 0 ] && break
  sleep 0.1
done
filled=$(psql -X -Atq -c "SELECT count(*) FROM answers WHERE a IS NOT NULL")
n=$(mock_requests)
check "queued again: $filled rows answered from llm.cache, $n provider calls" \
  $([ "$filled" = 200 ] && [ "$n" = 0 ] && echo 1 || echo 0)

echo "cache: $pass passed, $fail failed"
[ $fail -eq 0 ]
