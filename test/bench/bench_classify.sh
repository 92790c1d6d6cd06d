#!/usr/bin/env bash
# test/bench/bench_classify.sh: what asking for a shape costs.  The same
# items classified with a JSON schema (asked for with the provider's
# structured output, each answer validated in the extension) and sent
# without one, side by side in one run, at zero latency so that the
# extension's own work is what differs:
#
#   many     llm.chat_many over N prompts with the json_schema option of
#            llm.classify (an enum of three labels) against the same prompts
#            without a schema
#   sync     a loop of llm.classify over N/10 rows against a loop of
#            llm.chat over the same rows
#
# Each case is the median of R rounds, rounds of the two sides alternating.
# It prints a table with the seconds, the calls per second and the ratio
# schema / plain, and checks that every answer was one of the labels.  It
# never fails on a timing.
#
# usage: test/bench/bench_classify.sh [--items N] [--rounds R]
#   --items N   prompts of the chat_many case [10000]
#   --rounds R  rounds of each case [5]
source "$(dirname "$0")/../lib.sh"
items=10000
rounds=5
while [ $# -gt 0 ]; do
  case $1 in
    --items) items=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--items N] [--rounds R]" >&2; exit 2 ;;
  esac
done
sync_items=$((items / 10))
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
CREATE TABLE tickets AS
    SELECT g AS id, (ARRAY['the app crashes, refund please', 'works great, love it', 'how do I export?'])[1 + g % 3] || ' #' || g AS body
    FROM generate_series(1, $items) g;
SQL
SCHEMA='{"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "neutral", "negative"]}}, "required": ["label"], "additionalProperties": false}'
MOCK_PID=${PG_LLM_PIDS[-1]}
TICK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# seconds one statement takes, measured by the server; the CPU seconds its
# backend and the mock used go to $SCRATCH/cpu (backend mock)
secs() {
  local m0 m1 out
  m0=$(cpu "$MOCK_PID")
  out=$(psql -X -Atq -v ON_ERROR_STOP=1 <<SQL
SELECT 'SELECT split_part(f, '' '', 14)::int + split_part(f, '' '', 15)::int AS s FROM pg_read_file(''/proc/'
       || pg_backend_pid() || '/stat'') f' AS ticks \gset
:ticks \gset b0_
SELECT clock_timestamp() AS t0 \gset
$1;
:ticks \gset b1_
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4) || ' ' || (:b1_s - :b0_s);
SQL
)
  m1=$(cpu "$MOCK_PID")
  out=$(echo "$out" | tail -1)
  echo "${out#* } $((m1 - m0))" >> "$SCRATCH/cpu.$2"
  echo "${out% *}"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

many_schema=(); many_plain=(); sync_schema=(); sync_plain=()
for r in $(seq 1 "$rounds"); do
  many_schema+=("$(secs "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT body || ' r$r' FROM tickets ORDER BY id), 'mock', options => jsonb_build_object('json_schema', '$SCHEMA'::jsonb))" ms)")
  many_plain+=("$(secs "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT body || ' s$r' FROM tickets ORDER BY id), 'mock')" mp)")
  sync_schema+=("$(secs "SELECT count(llm.classify(body || ' t$r', ARRAY['positive', 'neutral', 'negative'], 'mock')) FROM tickets WHERE id <= $sync_items" ss)")
  sync_plain+=("$(secs "SELECT count(llm.chat(body || ' u$r', 'mock')) FROM tickets WHERE id <= $sync_items" sp)")
done

# every answer of a last round is one of the labels, and none was asked again
bad=$(psql -X -Atq -v ON_ERROR_STOP=1 <<SQL
SELECT count(*) FILTER (WHERE error IS NOT NULL OR (content::jsonb ->> 'label') NOT IN ('positive', 'neutral', 'negative'))
FROM llm.chat_many(ARRAY(SELECT body || ' check' FROM tickets ORDER BY id), 'mock', options => jsonb_build_object('json_schema', '$SCHEMA'::jsonb));
SQL
)
sleep 2
invalid=$(psql -X -Atq -c "SELECT count(*) FROM llm.usage WHERE outcome = 'invalid'")

ms=$(printf '%s\n' "${many_schema[@]}" | median)
mp=$(printf '%s\n' "${many_plain[@]}" | median)
ss=$(printf '%s\n' "${sync_schema[@]}" | median)
sp=$(printf '%s\n' "${sync_plain[@]}" | median)
printf '\n| case (median of %d rounds) | with a schema, s | calls/s | without, s | calls/s | schema / plain |\n|---|---|---|---|---|---|\n' "$rounds"
printf '| chat_many, %d prompts, zero latency | %s | %.0f | %s | %.0f | %.3f |\n' "$items" "$ms" "$(echo "$items / $ms" | bc -l)" "$mp" "$(echo "$items / $mp" | bc -l)" "$(echo "$ms / $mp" | bc -l)"
printf '| loop of classify / chat, %d rows, zero latency | %s | %.0f | %s | %.0f | %.3f |\n' "$sync_items" "$ss" "$(echo "$sync_items / $ss" | bc -l)" "$sp" "$(echo "$sync_items / $sp" | bc -l)" "$(echo "$ss / $sp" | bc -l)"
# CPU seconds per round (medians): the backend's and the mock's
cpus() { awk -v t="$TICK" '{print $'"$2"' / t}' "$SCRATCH/cpu.$1" | median; }
printf '\n| CPU seconds a round (median) | backend, with a schema | without | mock, with a schema | without |\n|---|---|---|---|---|\n'
printf '| chat_many | %s | %s | %s | %s |\n' "$(cpus ms 1)" "$(cpus mp 1)" "$(cpus ms 2)" "$(cpus mp 2)"
printf '| loop | %s | %s | %s | %s |\n' "$(cpus ss 1)" "$(cpus sp 1)" "$(cpus ss 2)" "$(cpus sp 2)"
printf '\nanswers not one of the labels: %s of %s; answers asked for again: %s\n' "$bad" "$items" "$invalid"
[ "$bad" = 0 ]
