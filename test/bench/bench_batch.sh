#!/usr/bin/env bash
# The queue worker's batch mode (via => 'batch_api') against its bounds,
# on the bundled mock, in one run:
#  - inline (a relay's synchronous /batches): N items (default 10,000), 200
#    ms a batch call, llm.batch_size 50 and llm.worker_concurrency 50: the
#    bound is ceil(N / 50) / 50 waves of 200 ms; the figure is the time from
#    the enqueue's commit to the last item written back, median of R rounds,
#    with the worker's CPU time; the same at 1 s a batch call, where the
#    worker's CPU is not what limits it;
#  - openai and anthropic: one job of M rows (default 100,000) run through
#    the provider's batch API, the mock finishing a batch at once: the
#    worker's time to build and send the requests (the first llm._batch
#    created_at to the last submitted_at) and to read and write the
#    results (each batch's last poll to its finished_at), items per second
#    of that time, the worker's CPU time (each the median of R rounds,
#    each round from compacted tables), and its peak memory (RssAnon, sampled every 50 ms: its own memory,
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
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SELECT llm.create_provider('claude', 'anthropic', 'http://127.0.0.1:$MOCK_PORT/anthropic/v1', api_key => 'sk-mock');
SELECT llm.add_model('inl', 'relay', 'deepseek-chat', input_usd_per_mtok => 0.27, output_usd_per_mtok => 1.1);
SELECT llm.add_model('oai', 'mock', 'gpt-4o-mini', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
SELECT llm.add_model('ant', 'claude', 'claude-haiku', input_usd_per_mtok => 0.8, output_usd_per_mtok => 4);
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, summary text);
INSERT INTO docs SELECT g, 'document number ' || g || ' of the nightly run' FROM generate_series(1, $job_rows) g;
SQL
worker_pid() { psql -X -Atq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'"; }
# Until no item is waiting; at most $1 seconds.  Each status is looked up
# through its own partial index, so that the polling takes next to no CPU
# from the worker (a count over the whole queue ten times a second took
# more than half a core at 100,000 items).
wait_done() {
  local i
  for i in $(seq 1 $(($1 * 5))); do
    [ "$(psql -X -Atq -c "SELECT NOT (EXISTS (SELECT 1 FROM llm.queue WHERE status = 'pending' AND via = 'realtime')
                                 OR EXISTS (SELECT 1 FROM llm.queue WHERE status = 'pending' AND via = 'batch_api')
                                 OR EXISTS (SELECT 1 FROM llm.queue WHERE status = 'running')
                                 OR EXISTS (SELECT 1 FROM llm.queue WHERE status = 'submitted'))")" = t ] && return 0
    sleep 0.2
  done
  return 1
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
reset() { psql -X -q -c "DELETE FROM llm.queue" -c "DELETE FROM llm._batch" -c "UPDATE docs SET summary = NULL WHERE summary IS NOT NULL" -c "VACUUM docs, llm.queue" >/dev/null; }

# ---- inline ----
# R rounds at a latency ($1 ms a batch call); prints "seconds cpu bound",
# each a median
inline_rounds() {
  local latency=$1 r pid cpu0 cpu1 t done_items
  local times=() cpus=()
  mock_config "{\"inline_latency_ms\": $latency, \"complete_after_ms\": 0}"
  for r in $(seq 1 "$rounds"); do
    reset
    pid=$(worker_pid)
    cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
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
    times+=("$(psql -X -Atq -c "SELECT round((extract(epoch FROM max(finished_at)) - $t)::numeric, 3) FROM llm.queue")")
    cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    cpus+=("$(echo "scale=2; ($cpu1 - $cpu0) / $(getconf CLK_TCK)" | bc)")
  done
  # the bound: ceil(N / 50) batch calls, 50 at a time
  echo "$(printf '%s\n' "${times[@]}" | median) $(printf '%s\n' "${cpus[@]}" | median)" \
    "$(echo "scale=3; $(( (items + 50 * 50 - 1) / (50 * 50) )) * $latency / 1000" | bc -l)"
}
read -r mi mcpu bound <<<"$(inline_rounds 200)"
read -r mi_slow mcpu_slow bound_slow <<<"$(inline_rounds 1000)"

# ---- openai and anthropic: one job of $job_rows rows, R rounds each ----
# each round starts from compacted tables and a checkpoint, so that no
# round pays for the dead rows or the dirty pages of the one before
mock_config '{"inline_latency_ms": 0, "complete_after_ms": 0}'
declare -A res
declare -A maxpeak
for model in oai ant; do
  rows=()
  maxpeak[$model]=0
  for r in $(seq 1 "$rounds"); do
    reset
    psql -X -q -c "SELECT llm.drop_job('nightly')" >/dev/null 2>&1 || true
    psql -X -q -c "VACUUM FULL docs" -c "VACUUM FULL llm.queue" -c "CHECKPOINT" >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -c "SELECT llm.create_job('nightly', 'docs', '{id}', 'Summarize: {body}', 'summary', model => '$model', via => 'batch_api', track_changes => false)" >/dev/null
    pid=$(worker_pid)
    cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    ( while kill -0 "$pid" 2>/dev/null; do awk '/^RssAnon/ {print $2}' "/proc/$pid/status"; sleep 0.05; done ) > "$SCRATCH/rss_$model" &
    sampler=$!
    t0=$(psql -X -Atq -c "SELECT llm.run_job('nightly')" >/dev/null; date +%s.%N)
    wait_done 600 || { log "$model job did not finish"; kill $sampler; exit 1; }
    t1=$(date +%s.%N)
    kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
    cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    peak=$(sort -n "$SCRATCH/rss_$model" | tail -1)
    [ "$peak" -gt "${maxpeak[$model]}" ] && maxpeak[$model]=$peak
    written=$(psql -X -Atq -c "SELECT count(*) FROM docs WHERE summary IS NOT NULL")
    [ "$written" = "$job_rows" ] || { log "$model job wrote $written of $job_rows rows"; exit 1; }
    # batches are built one after the other from one start: the submission
    # is the first creation to the last submission; each is read after its
    # last poll, one after the other
    read -r nb submit ingest < <(psql -X -Atq -F ' ' -c "SELECT count(*), round(extract(epoch FROM max(submitted_at) - min(created_at))::numeric, 2), round(sum(extract(epoch FROM finished_at - polled_at))::numeric, 2) FROM llm._batch WHERE status = 'ended'")
    ticks=$(getconf CLK_TCK)
    # a round: its worker time first (the median is taken over it)
    rows+=("$(echo "$submit + $ingest" | bc) $nb $submit $ingest $(echo "scale=2; ($cpu1 - $cpu0) / $ticks" | bc) $(echo "$t1 - $t0" | bc) $((peak / 1024))")
    log "$model round $r: $nb batches, build and send $submit s, read and write back $ingest s, worker CPU $(echo "scale=2; ($cpu1 - $cpu0) / $ticks" | bc) s, peak RssAnon $((peak / 1024)) MB"
    psql -X -q -c "SELECT llm.drop_job('nightly')" >/dev/null
  done
  res[$model]=$(printf '%s\n' "${rows[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p" | cut -d' ' -f2-)
done

printf '\n| case | figure | against |\n|---|---|---|\n'
inline_row() {  # latency seconds cpu bound
  printf '| inline, %d items, %d ms a batch call, 50 a batch, 50 in flight (median of %d) | %s s to the last write-back | bound %s s: %.0f%% of the bound; worker CPU %s s (%.0f µs an item) |\n' \
    "$items" "$1" "$rounds" "$2" "$4" "$(echo "100 * $4 / $2" | bc -l)" "$3" "$(echo "1000000 * $3 / $items" | bc -l)"
}
inline_row 200 "$mi" "$mcpu" "$bound"
inline_row 1000 "$mi_slow" "$mcpu_slow" "$bound_slow"
for model in oai ant; do
  read -r nb submit ingest cpu wall peak <<<"${res[$model]}"
  peak=$(( maxpeak[$model] / 1024 ))   # the highest of every round, in MB
  kind=$([ $model = oai ] && echo openai || echo anthropic)
  printf '| %s, one job of %d rows (%d batches; the median of %d rounds) | build and send %s s, read and write back %s s: %.0f items/s | worker CPU %s s (%.0f items/s of CPU), peak RssAnon %d MB in any round, %s s end to end |\n' \
    "$kind" "$job_rows" "$nb" "$rounds" "$submit" "$ingest" "$(echo "$job_rows / ($submit + $ingest)" | bc -l)" \
    "$cpu" "$(echo "$job_rows / $cpu" | bc -l)" "$peak" "$(printf '%.1f' "$wall")"
done
