#!/usr/bin/env bash
# The queue worker's batch mode (via => 'batch_api') against its bounds,
# on the bundled mock, in one run:
#  - inline (a relay's synchronous /batches): N items (default 10,000), 200
#    ms a batch call, llm.batch_size 50 and llm.worker_concurrency 50: the
#    bound is ceil(N / 50) / 50 waves of 200 ms; the figure is the time from
#    the enqueue's commit to the last item written back, median of R rounds;
#  - openai and anthropic: one job of M rows (default 100,000) run through
#    the provider's batch API, the mock finishing a batch at once: the
#    worker's time to build and send the requests (the first llm._batch
#    created_at to the last submitted_at) and to read and write the
#    results (each batch's last poll to its finished_at), items per second
#    of that time, the worker's CPU time,
#    and its peak memory (RssAnon, sampled every 50 ms: its own memory,
#    not the shared buffers it reads).
#   bash test/bench/bench_batch.sh [--items N] [--job-rows M] [--rounds R]
source "$(dirname "$0")/../lib.sh"
items=10000
job_rows=100000
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --items) items=$2; shift 2 ;;
    --job-rows) job_rows=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--items N] [--job-rows M] [--rounds R]" >&2; exit 2 ;;
  esac
done
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.batch_poll_interval = 1" "llm.worker_naptime = '200ms'" "shared_buffers = '256MB'" \
  "max_wal_size = '4GB'" "checkpoint_timeout = '30min'"
start_mock
mock_config() { curl -s -X POST -H 'Content-Type: application/json' -d "{\"batch\": $1}" \
  "http://127.0.0.1:$MOCK_PORT/_config" >/dev/null; }
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('relay', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
                           options => '{"batch_api": "inline"}');
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.create_provider('claude', 'anthropic', 'http://127.0.0.1:$MOCK_PORT/anthropic/v1', api_key => 'sk-mock');
SELECT llm.add_model('inl', 'relay', 'deepseek-chat', input_usd_per_mtok => 0.27, output_usd_per_mtok => 1.1);
SELECT llm.add_model('oai', 'mock', 'gpt-4o-mini', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
SELECT llm.add_model('ant', 'claude', 'claude-haiku', input_usd_per_mtok => 0.8, output_usd_per_mtok => 4);
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, summary text);
INSERT INTO docs SELECT g, 'document number ' || g || ' of the nightly run' FROM generate_series(1, $job_rows) g;
SQL
worker_pid() { psql -X -Atq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'"; }
wait_done() {  # until no item is waiting; at most $1 seconds
  local i
  for i in $(seq 1 $(($1 * 10))); do
    [ "$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running', 'submitted')")" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
reset() { psql -X -q -c "DELETE FROM llm.queue" -c "DELETE FROM llm._batch" -c "UPDATE docs SET summary = NULL WHERE summary IS NOT NULL" -c "VACUUM docs, llm.queue" >/dev/null; }

# ---- inline ----
mock_config '{"inline_latency_ms": 200, "complete_after_ms": 0}'
inline=()
for r in $(seq 1 "$rounds"); do
  reset
  t=$(psql -X -Atq <<SQL | tail -1
BEGIN;
SELECT count(llm.enqueue(body, 'inl', target_table => 'docs', target_column => 'summary',
                         target_key => jsonb_build_object('id', id), via => 'batch_api'))
FROM docs WHERE id <= $items;
COMMIT;
SELECT extract(epoch FROM clock_timestamp());
SQL
)
  wait_done 120 || { log "inline round $r did not finish"; exit 1; }
  done_items=$(psql -X -Atq -c "SELECT count(*) FROM docs WHERE summary IS NOT NULL")
  [ "$done_items" = "$items" ] || { log "inline round $r wrote $done_items of $items rows"; exit 1; }
  inline+=("$(psql -X -Atq -c "SELECT round((extract(epoch FROM max(finished_at)) - $t)::numeric, 3) FROM llm.queue")")
done
mi=$(printf '%s\n' "${inline[@]}" | median)
waves=$(( (items + 50 * 50 - 1) / (50 * 50) ))
bound=$(echo "scale=3; (($items + 49) / 50) / 50 * 0.2" | bc -l)

# ---- openai and anthropic: one job of $job_rows rows ----
mock_config '{"inline_latency_ms": 0, "complete_after_ms": 0}'
declare -A res
for model in oai ant; do
  reset
  psql -X -q -c "SELECT llm.drop_job('nightly')" >/dev/null 2>&1 || true
  psql -X -q -v ON_ERROR_STOP=1 -c "SELECT llm.create_job('nightly', 'docs', '{id}', 'Summarize: {body}', 'summary', model => '$model', via => 'batch_api', track_changes => false)" >/dev/null
  pid=$(worker_pid)
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  peak=0
  ( while kill -0 "$pid" 2>/dev/null; do awk '/^RssAnon/ {print $2}' "/proc/$pid/status"; sleep 0.05; done ) > "$SCRATCH/rss_$model" &
  sampler=$!
  t0=$(psql -X -Atq -c "SELECT llm.run_job('nightly')" >/dev/null; date +%s.%N)
  wait_done 600 || { log "$model job did not finish"; kill $sampler; exit 1; }
  t1=$(date +%s.%N)
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  peak=$(sort -n "$SCRATCH/rss_$model" | tail -1)
  written=$(psql -X -Atq -c "SELECT count(*) FROM docs WHERE summary IS NOT NULL")
  [ "$written" = "$job_rows" ] || { log "$model job wrote $written of $job_rows rows"; exit 1; }
  # batches are built one after the other from one start: the submission
  # is the first creation to the last submission; each is read after its
  # last poll, one after the other
  read -r nb submit ingest < <(psql -X -Atq -F ' ' -c "SELECT count(*), round(extract(epoch FROM max(submitted_at) - min(created_at))::numeric, 2), round(sum(extract(epoch FROM finished_at - polled_at))::numeric, 2) FROM llm._batch WHERE status = 'ended'")
  ticks=$(getconf CLK_TCK)
  res[$model]="$nb $submit $ingest $(echo "scale=2; ($cpu1 - $cpu0) / $ticks" | bc) $(echo "$t1 - $t0" | bc) $((peak / 1024))"
  psql -X -q -c "SELECT llm.drop_job('nightly')" >/dev/null
done

printf '\n| case | figure | against |\n|---|---|---|\n'
printf '| inline, %d items, 200 ms a batch call, 50 a batch, 50 in flight (median of %d) | %s s to the last write-back | bound %s s: %.0f%% of the bound |\n' \
  "$items" "$rounds" "$mi" "$bound" "$(echo "100 * $bound / $mi" | bc -l)"
for model in oai ant; do
  read -r nb submit ingest cpu wall peak <<<"${res[$model]}"
  kind=$([ $model = oai ] && echo openai || echo anthropic)
  printf '| %s, one job of %d rows (%d batches) | build and send %s s, read and write back %s s: %.0f items/s | worker CPU %s s (%.0f items/s of CPU), peak RssAnon %d MB, %s s end to end |\n' \
    "$kind" "$job_rows" "$nb" "$submit" "$ingest" "$(echo "$job_rows / ($submit + $ingest)" | bc -l)" \
    "$cpu" "$(echo "$job_rows / $cpu" | bc -l)" "$peak" "$(printf '%.1f' "$wall")"
done
