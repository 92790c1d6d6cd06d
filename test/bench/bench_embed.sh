#!/usr/bin/env bash
# Embeddings against their bounds, side by side in one run on one mock:
#  - llm.embed_many of N inputs (default 10,000; 256 dimensions) against a
#    loop of llm.embed over the same inputs in one statement: the requests
#    the mock received and the time, median of R rounds, interleaved.
#   bash test/bench/bench_embed.sh [--inputs N] [--rounds R]
source "$(dirname "$0")/../lib.sh"
inputs=10000
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --inputs) inputs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--inputs N] [--rounds R]" >&2; exit 2 ;;
  esac
done
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('emb', 'mock', 'text-embedding-3-small', input_usd_per_mtok => 0.02);
SQL
secs() {  # seconds one statement takes, measured by the server
  psql -X -Atq <<SQL | tail -1
SELECT clock_timestamp() AS t0 \gset
$1;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
mock_requests() {
  curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["embeddings"]["requests"])'
}
mock_reset() { curl -s -X POST "http://127.0.0.1:$MOCK_PORT/_reset" >/dev/null; }
texts="SELECT 'document ' || g || ' of round %s, about topic ' || (g %% 97) || ' and its neighbours' FROM generate_series(1, $inputs) g"

many=()
loop=()
for r in $(seq 1 "$rounds"); do
  mock_reset
  many+=("$(secs "SELECT count(*) FROM llm.embed_many(ARRAY($(printf "$texts" "m$r")), 'emb', '{\"dimensions\": 256}') WHERE error IS NULL")")
  many_requests=$(mock_requests)
  mock_reset
  loop+=("$(secs "SELECT count(llm.embed(t, 'emb', '{\"dimensions\": 256}')) FROM ($(printf "$texts" "l$r")) s(t)")")
  loop_requests=$(mock_requests)
done
m=$(printf '%s\n' "${many[@]}" | median)
l=$(printf '%s\n' "${loop[@]}" | median)
printf '\n| case (%d inputs, 256 dimensions, median of %d) | requests sent | seconds | inputs/s | against the loop |\n|---|---|---|---|---|\n' "$inputs" "$rounds"
printf '| llm.embed_many (%s inputs a request, %s in flight) | %s | %s | %.0f | %.1fx faster |\n' \
  "$(psql -X -Atq -c 'SHOW llm.embed_inputs_per_request')" "$(psql -X -Atq -c 'SHOW llm.many_concurrency')" \
  "$many_requests" "$m" "$(echo "$inputs / $m" | bc -l)" "$(echo "$l / $m" | bc -l)"
printf '| loop of llm.embed | %s | %s | %.0f | |\n' "$loop_requests" "$l" "$(echo "$inputs / $l" | bc -l)"
