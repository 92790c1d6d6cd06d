#!/usr/bin/env bash
# The cost of usage accounting, side by side in one run against one mock:
#  - the synchronous path: N sequential llm.chat calls in one statement with
#    llm.track_usage on, off, and on with a budget checked before each call;
#  - the worker: draining N queue items with write-back, accounting on and
#    off (switched with ALTER SYSTEM and a reload).
# Rounds are interleaved and the median is reported.  Usage:
#   bash test/bench/bench_usage.sh [--calls N] [--items N] [--rounds R]
source "$(dirname "$0")/../lib.sh"
calls=3000
items=10000
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --calls) calls=$2; shift 2 ;;
    --items) items=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--calls N] [--items N] [--rounds R]" >&2; exit 2 ;;
  esac
done
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" "llm.worker_naptime = '100ms'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SELECT llm.add_model('m', 'mock', 'mock', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
CREATE ROLE budgeted LOGIN;
GRANT USAGE ON SCHEMA llm TO budgeted;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb) TO budgeted;
SELECT llm.set_budget('budgeted', 1000000);
CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, $items) g;
SQL

# seconds for one psql invocation
timed() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo "scale=4; ($t1 - $t0) / 1000000000" | bc
}
sync_run() {  # $1: on|off|budget
  local q="SELECT count(llm.chat('bench ' || g, 'm')) FROM generate_series(1, $calls) g"
  case $1 in
    on) timed psql -X -q -c "SET llm.track_usage = on" -c "$q" ;;
    off) timed psql -X -q -c "SET llm.track_usage = off" -c "$q" ;;
    budget) timed psql -X -q -U budgeted -c "$q" ;;
  esac
}
worker_run() {  # $1: on|off
  psql -X -q -c "ALTER SYSTEM SET llm.track_usage = $1" -c "SELECT pg_reload_conf()" \
    -c "TRUNCATE llm.queue" -c "UPDATE docs SET summary = NULL" >/dev/null
  sleep 0.3
  psql -X -q -c "SELECT count(llm.enqueue('Summarize ' || body, 'm', target_table => 'docs', target_column => 'summary', target_key => jsonb_build_object('id', id))) FROM docs" >/dev/null
  for i in $(seq 1 1200); do
    [ "$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')")" = 0 ] && break
    sleep 0.05
  done
  psql -X -Atq -c "SELECT round(count(*) / extract(epoch FROM max(finished_at) - min(started_at))::numeric) FROM llm.queue WHERE status = 'done'"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

sync_run on >/dev/null   # warm up: connections, caches
declare -A S W
for r in $(seq 1 "$rounds"); do
  for mode in on off budget; do S[$mode]+="$(sync_run $mode) "; done
  for mode in on off; do W[$mode]+="$(worker_run $mode) "; done
done
psql -X -q -c "ALTER SYSTEM RESET llm.track_usage" -c "SELECT pg_reload_conf()" >/dev/null

s_on=$(tr ' ' '\n' <<<"${S[on]}" | grep . | median)
s_off=$(tr ' ' '\n' <<<"${S[off]}" | grep . | median)
s_bud=$(tr ' ' '\n' <<<"${S[budget]}" | grep . | median)
w_on=$(tr ' ' '\n' <<<"${W[on]}" | grep . | median)
w_off=$(tr ' ' '\n' <<<"${W[off]}" | grep . | median)
printf '\nAccounting overhead (median of %d rounds; %d sync calls, %d queue items, mock at zero latency)\n\n' "$rounds" "$calls" "$items"
printf '| path | accounting off | accounting on | on with a budget | overhead (target < 5%%) |\n|---|---|---|---|---|\n'
printf '| sync, µs per call | %.0f | %.0f | %.0f | %s / %s |\n' \
  "$(echo "$s_off * 1000000 / $calls" | bc -l)" "$(echo "$s_on * 1000000 / $calls" | bc -l)" "$(echo "$s_bud * 1000000 / $calls" | bc -l)" \
  "$(printf '%+.1f%%' "$(echo "($s_on - $s_off) * 100 / $s_off" | bc -l)")" "$(printf '%+.1f%%' "$(echo "($s_bud - $s_off) * 100 / $s_off" | bc -l)")"
printf '| worker, items/s | %s | %s | | %s |\n' "$w_off" "$w_on" \
  "$(printf '%+.1f%%' "$(echo "($w_off - $w_on) * 100 / $w_off" | bc -l)")"
printf '\nsync rounds (s): on %s| off %s| budget %s\nworker rounds (items/s): on %s| off %s\n' "${S[on]}" "${S[off]}" "${S[budget]}" "${W[on]}" "${W[off]}"
