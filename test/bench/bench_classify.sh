#!/usr/bin/env bash
# test/bench/bench_classify.sh: what asking for a shape costs.  The same
# items classified with a JSON schema (asked for with the provider's
# structured output, each answer validated in the extension) and sent
# without one, side by side in one run, at zero latency so that the
# extension's own work is what differs:
#
#   queue    N items through the queue worker: a label (an enum of three)
#            written into an enum column, against the same items without a
#            schema written into a text column; the drain's seconds (first
#            claim to last write) and the worker's CPU
#   many     llm.chat_many over N prompts with the json_schema option of
#            llm.classify against the same prompts without a schema
#   sync     a loop of llm.classify over N/10 rows against a loop of
#            llm.chat over the same rows
#   batch    a job of J rows through the OpenAI batch API (Files and
#            Batches on the mock) whose answers are a label not in the list
#            for 5 % of the rows: each of those is sent again realtime with
#            the validation error; every row must end with a valid label
#
# Each timed case is the median of R rounds, the two sides alternating.
# It prints the seconds, the rates and the ratio schema / plain, and checks
# that every answer was one of the labels (and fails if one was not, never
# on a timing).
#
# usage: test/bench/bench_classify.sh [--items N] [--job-rows J] [--rounds R]
#   --items N     items of the queue and chat_many cases [10000]
#   --job-rows J  rows of the batch job [1000]
#   --rounds R    rounds of each timed case [3]
source "$(dirname "$0")/../lib.sh"
items=10000
job_rows=1000
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --items) items=$2; shift 2 ;;
    --job-rows) job_rows=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--items N] [--job-rows J] [--rounds R]" >&2; exit 2 ;;
  esac
done
sync_items=$((items / 10))
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.batch_poll_interval = 1" "llm.worker_naptime = '200ms'" "shared_buffers = '256MB'" \
  "max_wal_size = '4GB'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SELECT llm.create_provider('oai', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
-- the answers to prompts that say "bad" are a label not in the list
SELECT llm.add_model('oai-batch', 'oai', 'gpt-4o-mini?shape=label&when=bad',
                     input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
CREATE TYPE mood AS ENUM ('positive', 'neutral', 'negative');
CREATE TABLE tickets (id int PRIMARY KEY, body text NOT NULL, mood mood, said text);
INSERT INTO tickets
    SELECT g, (ARRAY['the app crashes, refund please', 'works great, love it', 'how do I export?'])[1 + g % 3] || ' #' || g
    FROM generate_series(1, $items) g;
CREATE TABLE reviews (id int PRIMARY KEY, body text NOT NULL, mood mood);
INSERT INTO reviews
    SELECT g, CASE WHEN g % 20 = 0 THEN 'bad: ' ELSE '' END ||
              (ARRAY['love it', 'crashes all the time', 'it arrived'])[1 + g % 3] || ' #' || g
    FROM generate_series(1, $job_rows) g;
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
worker_pid() { psql -X -Atq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'"; }
# until no item waits; at most $1 seconds (each status through its partial index)
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
# one drain of the queue: $1 = schema or plain; prints "seconds cpu"
drain() {
  local pid c0 c1 opts col
  psql -X -q -c "DELETE FROM llm.queue" -c "UPDATE tickets SET mood = NULL, said = NULL" -c "VACUUM tickets, llm.queue" >/dev/null
  if [ "$1" = schema ]; then
    opts="jsonb_build_object('json_schema', '$SCHEMA'::jsonb)"; col=mood
  elif [ "$1" = padded ]; then
    # options as large as the schema's, without a schema: what storing them costs
    opts="jsonb_build_object('metadata', jsonb_build_object('note', '$SCHEMA'::text))"; col=said
  else
    opts=NULL; col=said
  fi
  pid=$(worker_pid)
  c0=$(cpu "$pid")
  m0=$(cpu "$MOCK_PID")
  psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT count(llm.enqueue(body, 'mock', target_table => 'tickets', target_column => '$col',
                         target_key => jsonb_build_object('id', id), options => $opts))
FROM tickets;
SQL
  wait_done 300 || { log "a drain did not finish"; exit 1; }
  c1=$(cpu "$pid")
  m1=$(cpu "$MOCK_PID")
  [ "$(psql -X -Atq -c "SELECT count(*) FROM tickets WHERE $col IS NOT NULL")" = "$items" ] ||
    { log "a drain did not write every row"; exit 1; }
  echo "$(psql -X -Atq -c "SELECT round(extract(epoch FROM max(finished_at) - min(started_at))::numeric, 3) FROM llm.queue") $(echo "scale=2; ($c1 - $c0) / $TICK" | bc) $(echo "scale=2; ($m1 - $m0) / $TICK" | bc)"
}

queue_schema=(); queue_plain=(); qcpu_schema=(); qcpu_plain=(); qm_schema=(); qm_plain=()
queue_padded=(); qcpu_padded=(); qm_padded=()
for r in $(seq 1 "$rounds"); do
  read -r t c m <<<"$(drain schema)"; queue_schema+=("$t"); qcpu_schema+=("$c"); qm_schema+=("$m")
  read -r t c m <<<"$(drain plain)"; queue_plain+=("$t"); qcpu_plain+=("$c"); qm_plain+=("$m")
  read -r t c m <<<"$(drain padded)"; queue_padded+=("$t"); qcpu_padded+=("$c"); qm_padded+=("$m")
done
bad_queue=$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status <> 'done'")
psql -X -q -c "DELETE FROM llm.queue" >/dev/null

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

# ---- a job through the OpenAI batch API, 5 % of its answers invalid ----
psql -X -q -c "TRUNCATE llm.usage" >/dev/null
t0=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT llm.create_job('moods', 'reviews', '{id}', 'Review: {body}', 'mood', model => 'oai-batch',
                      via => 'batch_api', options => jsonb_build_object('json_schema', '$SCHEMA'::jsonb));
SELECT llm.run_job('moods');
SQL
wait_done 600 || { log "the batch job did not finish"; exit 1; }
t1=$(date +%s.%N)
sleep 2
read -r job_valid job_invalid_rows <<<"$(psql -X -Atq -F ' ' -c "SELECT count(*) FILTER (WHERE mood IS NOT NULL), count(*) FILTER (WHERE mood IS NULL) FROM reviews")"
read -r job_batch job_realtime job_failed <<<"$(psql -X -Atq -F ' ' -c "SELECT count(*) FILTER (WHERE via = 'batch_api' AND status = 'done'), count(*) FILTER (WHERE via = 'realtime' AND status = 'done'), count(*) FILTER (WHERE status = 'failed') FROM llm.queue WHERE job = 'moods'")"
job_usage=$(psql -X -Atq -c "SELECT string_agg(mode || ' ' || outcome || ': ' || n, ', ' ORDER BY mode, outcome) FROM (SELECT mode, outcome, count(*) n FROM llm.usage GROUP BY 1, 2) u")

qs=$(printf '%s\n' "${queue_schema[@]}" | median)
qp=$(printf '%s\n' "${queue_plain[@]}" | median)
qd=$(printf '%s\n' "${queue_padded[@]}" | median)
ms=$(printf '%s\n' "${many_schema[@]}" | median)
mp=$(printf '%s\n' "${many_plain[@]}" | median)
ss=$(printf '%s\n' "${sync_schema[@]}" | median)
sp=$(printf '%s\n' "${sync_plain[@]}" | median)
printf '\n| case (median of %d rounds) | with a schema, s | calls/s | without, s | calls/s | schema / plain |\n|---|---|---|---|---|---|\n' "$rounds"
printf '| queue, %d items, zero latency (first claim to last write) | %s | %.0f | %s | %.0f | %.3f |\n' "$items" "$qs" "$(echo "$items / $qs" | bc -l)" "$qp" "$(echo "$items / $qp" | bc -l)" "$(echo "$qs / $qp" | bc -l)"
printf '| queue, the plain items with options as large as the schema | %s | %.0f | %s | %.0f | %.3f |\n' "$qs" "$(echo "$items / $qs" | bc -l)" "$qd" "$(echo "$items / $qd" | bc -l)" "$(echo "$qs / $qd" | bc -l)"
printf '| chat_many, %d prompts, zero latency | %s | %.0f | %s | %.0f | %.3f |\n' "$items" "$ms" "$(echo "$items / $ms" | bc -l)" "$mp" "$(echo "$items / $mp" | bc -l)" "$(echo "$ms / $mp" | bc -l)"
printf '| loop of classify / chat, %d rows, zero latency | %s | %.0f | %s | %.0f | %.3f |\n' "$sync_items" "$ss" "$(echo "$sync_items / $ss" | bc -l)" "$sp" "$(echo "$sync_items / $sp" | bc -l)" "$(echo "$ss / $sp" | bc -l)"
# CPU seconds per round (medians): the backend's and the mock's
cpus() { awk -v t="$TICK" '{print $'"$2"' / t}' "$SCRATCH/cpu.$1" | median; }
printf '\n| CPU seconds a round (median) | backend, with a schema | without | mock, with a schema | without |\n|---|---|---|---|---|\n'
printf '| queue (the worker) | %s | %s | %s | %s |\n' "$(printf '%s\n' "${qcpu_schema[@]}" | median)" "$(printf '%s\n' "${qcpu_plain[@]}" | median)" \
  "$(printf '%s\n' "${qm_schema[@]}" | median)" "$(printf '%s\n' "${qm_plain[@]}" | median)"
printf '| queue, plain with large options | | %s | | %s |\n' "$(printf '%s\n' "${qcpu_padded[@]}" | median)" "$(printf '%s\n' "${qm_padded[@]}" | median)"
printf '| chat_many | %s | %s | %s | %s |\n' "$(cpus ms 1)" "$(cpus mp 1)" "$(cpus ms 2)" "$(cpus mp 2)"
printf '| loop | %s | %s | %s | %s |\n' "$(cpus ss 1)" "$(cpus sp 1)" "$(cpus ss 2)" "$(cpus sp 2)"
printf '\nchat_many answers not one of the labels: %s of %s; queue items not done: %s\n' "$bad" "$items" "$bad_queue"
printf '\nbatch job of %d rows through the OpenAI batch API, 5 %% of its answers invalid: %.1f s;\n' "$job_rows" "$(echo "$t1 - $t0" | bc -l)"
printf 'rows with a valid label %s, without %s; items done from the batch %s, sent again realtime and done %s, failed %s\n' \
  "$job_valid" "$job_invalid_rows" "$job_batch" "$job_realtime" "$job_failed"
printf 'usage rows: %s\n' "$job_usage"
[ "$bad" = 0 ] && [ "$bad_queue" = 0 ] && [ "$job_invalid_rows" = 0 ] && [ "$job_failed" = 0 ]
