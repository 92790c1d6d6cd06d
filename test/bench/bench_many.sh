#!/usr/bin/env bash
# llm.chat_many against its bounds, side by side in one run on one mock:
#  - 1,000 prompts at 50 ms a call, 50 in flight: the bound is 1.0 s
#    (1,000 / 50 * 50 ms); the figure is the elapsed time and its ratio;
#  - at zero latency: calls per second of chat_many against a loop of
#    llm.chat in one statement, the same number of calls.
# Median of R rounds, interleaved.
#   bash test/bench/bench_many.sh [--prompts N] [--rounds R]
source "$(dirname "$0")/../lib.sh"
prompts=1000
rounds=5
while [ $# -gt 0 ]; do
  case $1 in
    --prompts) prompts=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--prompts N] [--rounds R]" >&2; exit 2 ;;
  esac
done
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SQL
secs() {  # seconds one statement takes, measured by the server
  psql -X -Atq <<SQL | tail -1
SELECT clock_timestamp() AS t0 \gset
$1;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
many50=()
many0=()
loop0=()
for r in $(seq 1 "$rounds"); do
  many50+=("$(secs "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'p$r ' || g FROM generate_series(1, $prompts) g), 'mock?latency=50')")")
  many0+=("$(secs "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'q$r ' || g FROM generate_series(1, $prompts) g), 'mock')")")
  loop0+=("$(secs "SELECT count(llm.chat('r$r ' || g, 'mock')) FROM generate_series(1, $prompts) g")")
done
m50=$(printf '%s\n' "${many50[@]}" | median)
m0=$(printf '%s\n' "${many0[@]}" | median)
l0=$(printf '%s\n' "${loop0[@]}" | median)
bound=$(echo "scale=4; $prompts / 50 * 0.05" | bc)
printf '\n| case (%d prompts, median of %d) | seconds | calls/s | against |\n|---|---|---|---|\n' "$prompts" "$rounds"
printf '| chat_many, 50 ms a call, 50 in flight | %s | %.0f | bound %s s: %.2fx |\n' "$m50" "$(echo "$prompts / $m50" | bc -l)" "$bound" "$(echo "$m50 / $bound" | bc -l)"
printf '| chat_many, zero latency | %s | %.0f | %.2fx the calls/s of the llm.chat loop |\n' "$m0" "$(echo "$prompts / $m0" | bc -l)" "$(echo "$l0 / $m0" | bc -l)"
printf '| loop of llm.chat, zero latency | %s | %.0f | |\n' "$l0" "$(echo "$prompts / $l0" | bc -l)"
