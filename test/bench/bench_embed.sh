#!/usr/bin/env bash
# Embeddings against their bounds, side by side in one run on one mock:
#
#  (a) the queue: one job (task => 'embed') of N rows (default 100,000)
#      embedded with 256 dimensions and written into a vector(256) column
#      (pgvector, built by test/vendor.sh) by the worker, its default 100
#      inputs a request and 50 requests in flight:
#        - at zero latency (the write-back's own ceiling, with the mock's
#          cost), rows per second against the target of 5,000;
#        - at L ms a request (default 200): rows per second against the
#          bound 100 * 50 / L and against the zero-latency ceiling, the
#          lower of the two being the one to reach 0.8 of;
#        - the worker's private memory (RssAnon) in the zero-latency
#          drain of N rows, once 10,000 rows are done and at the end,
#          and its CPU time per row;
#  (b) llm.embed_many of M inputs (default 10,000) against a loop of
#      llm.embed over the same inputs in one statement: the requests the
#      mock received and the time, median of R rounds, interleaved;
#  (c) the same job of N rows through the OpenAI Batch API (via =>
#      'batch_api', endpoint /v1/embeddings, one input a line, the mock
#      finishing a batch at once), as bench_batch.sh prints the chat one:
#      the worker's time to build and send the requests (the first
#      llm._batch created_at to the last submitted_at) and to read and
#      write back the results (each batch's last poll to its finished_at),
#      items per second of that time, its CPU time and peak memory
#      (RssAnon, sampled every 50 ms), median of B rounds (default 1), each
#      from compacted tables.
#
# A drain's rate is rows / (last finished_at - first started_at) of its
# items in llm.queue: from the first claim to the last vector written.
# Nothing here is a timed assertion: the script fails only when a row was
# not embedded.
#   bash test/bench/bench_embed.sh [--rows N] [--latency L] [--inputs M] [--rounds R] [--batch-rounds B]
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/../vendor.sh"
rows=100000
latency=200
inputs=10000
rounds=3
batch_rounds=1
while [ $# -gt 0 ]; do
  case $1 in
    --rows) rows=$2; shift 2 ;;
    --latency) latency=$2; shift 2 ;;
    --inputs) inputs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --batch-rounds) batch_rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--rows N] [--latency L] [--inputs M] [--rounds R] [--batch-rounds B]" >&2; exit 2 ;;
  esac
done
small=$(( rows < 10000 ? rows : 10000 ))
build_install
vendor_pgvector
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.worker_naptime = '200ms'" "llm.batch_poll_interval = 1" "shared_buffers = '256MB'" "max_wal_size = '4GB'" \
  "checkpoint_timeout = '30min'"
start_mock
MOCK_PID=${PG_LLM_PIDS[-1]}
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
CREATE EXTENSION vector;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
                           options => '{"pass_through": true}');
SELECT llm.add_model('emb', 'mock', 'text-embedding-3-small', input_usd_per_mtok => 0.02);
SELECT llm.add_model('emb-slow', 'mock', 'text-embedding-3-small?latency=$latency', input_usd_per_mtok => 0.02);
CREATE TABLE bench_docs (id int PRIMARY KEY, body text NOT NULL, embedding vector(256));
INSERT INTO bench_docs SELECT g, 'document ' || g || ' of the nightly corpus, about topic ' || (g % 97)
FROM generate_series(1, $rows) g;
SELECT llm.create_job('bench_fast', 'bench_docs', '{id}', '{body}', 'embedding', model => 'emb',
                      options => '{"dimensions": 256}', task => 'embed', track_changes => false);
SELECT llm.create_job('bench_slow', 'bench_docs', '{id}', '{body}', 'embedding', model => 'emb-slow',
                      options => '{"dimensions": 256}', task => 'embed', track_changes => false);
SELECT llm.create_job('bench_batch', 'bench_docs', '{id}', '{body}', 'embedding', model => 'emb',
                      options => '{"dimensions": 256}', task => 'embed', track_changes => false,
                      via => 'batch_api');
SQL
worker_pid() { psql -X -Atq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'"; }
WPID=""
for _ in $(seq 1 100); do WPID=$(worker_pid); [ -n "$WPID" ] && break; sleep 0.1; done
[ -n "$WPID" ] || { log "the pg_llm worker is not running"; exit 1; }
cpu_ns() { cut -d' ' -f1 "/proc/$1/schedstat"; }
anon_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status"; }
mock_requests() {
  curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["embeddings"]["requests"])'
}
mock_reset() { curl -s -X POST "http://127.0.0.1:$MOCK_PORT/_reset" >/dev/null; }

# drain JOB N: the first N rows without a vector, queued by run_job; waits
# until the queue is empty; prints "rows/s worker-cpu-us-per-row requests
# RssAnon-kB-once-10,000-rows-are-done RssAnon-kB-at-the-end"
drain() {
  local job=$1 n=$2 c0 c1 rate left mark=
  psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
DELETE FROM llm.queue;
UPDATE bench_docs SET embedding = NULL WHERE embedding IS NOT NULL;
UPDATE bench_docs SET embedding = '[$(python3 -c 'print(",".join(["0"] * 256))')]' WHERE id > $n;
VACUUM ANALYZE bench_docs;
VACUUM ANALYZE llm.queue;
SQL
  mock_reset
  c0=$(cpu_ns "$WPID")
  psql -X -q -v ON_ERROR_STOP=1 -c "SELECT llm.run_job('$job')" >/dev/null
  for _ in $(seq 1 3000); do
    left=$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')")
    [ -z "$mark" ] && [ $(( n - left )) -ge "$small" ] && mark=$(anon_kb "$WPID")
    [ "$left" = 0 ] && break
    sleep 0.2
  done
  c1=$(cpu_ns "$WPID")
  rate=$(psql -X -Atq -c "SELECT round(count(*) / extract(epoch FROM max(finished_at) - min(started_at))) FROM llm.queue WHERE status = 'done'")
  local done_rows
  done_rows=$(psql -X -Atq -c "SELECT count(*) FROM bench_docs WHERE id <= $n AND embedding IS NOT NULL AND vector_dims(embedding) = 256")
  [ "$done_rows" = "$n" ] || { log "$job: $done_rows of $n rows embedded"; psql -X -c "SELECT status, left(error, 200), count(*) FROM llm.queue GROUP BY 1, 2"; exit 1; }
  echo "$rate $(( (c1 - c0) / 1000 / n )) $(mock_requests) ${mark:-0} $(anon_kb "$WPID")"
}

log "warm-up: 1,000 rows"
drain bench_fast 1000 >/dev/null
log "zero latency: $small rows"
read -r r_small cpu_small req_small _ _ <<<"$(drain bench_fast "$small")"
log "zero latency: $rows rows"
read -r r_fast cpu_fast req_fast mem_small mem_big <<<"$(drain bench_fast "$rows")"
log "$latency ms a request: $rows rows"
read -r r_slow cpu_slow req_slow _ _ <<<"$(drain bench_slow "$rows")"
bound=$(( 100 * 50 * 1000 / latency ))
lower=$(( bound < r_fast ? bound : r_fast ))

# (b) embed_many against a loop of llm.embed
secs() {  # seconds one statement takes, measured by the server
  psql -X -Atq <<SQL | tail -1
SELECT clock_timestamp() AS t0 \gset
$1;
SELECT round(extract(epoch FROM clock_timestamp() - :'t0')::numeric, 4);
SQL
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
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

# (c) the job through the OpenAI Batch API
batch_done() {  # nothing waiting; at most $1 seconds
  local i
  for i in $(seq 1 $(($1 * 5))); do
    [ "$(psql -X -Atq -c "SELECT NOT (EXISTS (SELECT 1 FROM llm.queue WHERE status = 'pending')
                                 OR EXISTS (SELECT 1 FROM llm.queue WHERE status = 'running')
                                 OR EXISTS (SELECT 1 FROM llm.queue WHERE status = 'submitted'))")" = t ] && return 0
    sleep 0.2
  done
  return 1
}
brows=()
bpeak=0
for r in $(seq 1 "$batch_rounds"); do
  psql -X -q -v ON_ERROR_STOP=1 -c "DELETE FROM llm.queue" -c "DELETE FROM llm._batch" \
    -c "UPDATE bench_docs SET embedding = NULL WHERE embedding IS NOT NULL" \
    -c "VACUUM FULL bench_docs" -c "VACUUM FULL llm.queue" -c "CHECKPOINT" >/dev/null
  c0=$(cpu_ns "$WPID")
  ( while kill -0 "$WPID" 2>/dev/null; do anon_kb "$WPID"; sleep 0.05; done ) > "$SCRATCH/rss_batch" &
  sampler=$!
  t0=$(date +%s.%N)
  psql -X -q -v ON_ERROR_STOP=1 -c "SELECT llm.run_job('bench_batch')" >/dev/null
  batch_done 900 || { log "the batch job did not finish"; kill $sampler; exit 1; }
  t1=$(date +%s.%N)
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  c1=$(cpu_ns "$WPID")
  peak=$(sort -n "$SCRATCH/rss_batch" | tail -1)
  [ "$peak" -gt "$bpeak" ] && bpeak=$peak
  written=$(psql -X -Atq -c "SELECT count(*) FROM bench_docs WHERE embedding IS NOT NULL AND vector_dims(embedding) = 256")
  [ "$written" = "$rows" ] || { log "the batch job wrote $written of $rows rows"; psql -X -c "SELECT status, left(error, 200), count(*) FROM llm.queue GROUP BY 1, 2"; exit 1; }
  read -r nb submit ingest < <(psql -X -Atq -F ' ' -c "SELECT count(*), round(extract(epoch FROM max(submitted_at) - min(created_at))::numeric, 2), round(sum(extract(epoch FROM finished_at - polled_at))::numeric, 2) FROM llm._batch WHERE status = 'ended'")
  bcpu=$(echo "scale=2; ($c1 - $c0) / 1000000000" | bc)
  brows+=("$(echo "$submit + $ingest" | bc) $nb $submit $ingest $bcpu $(echo "$t1 - $t0" | bc) $((peak / 1024))")
  log "batch round $r: $nb batches, build and send $submit s, read and write back $ingest s, worker CPU $bcpu s, peak RssAnon $((peak / 1024)) MB"
done
read -r nb submit ingest bcpu bwall _ <<<"$(printf '%s\n' "${brows[@]}" | sort -n | sed -n "$(( (batch_rounds + 1) / 2 ))p" | cut -d' ' -f2-)"

printf '\n(a) the queue: a job of %d rows embedded (256 dimensions) into vector(256), 100 inputs a request, 50 in flight\n\n' "$rows"
printf '| case | rows/s | requests | worker CPU per row | against |\n|---|---|---|---|---|\n'
printf '| zero latency, %d rows | %s | %s | %s µs | target 5,000 rows/s: %.2fx |\n' "$small" "$r_small" "$req_small" "$cpu_small" "$(echo "$r_small / 5000" | bc -l)"
printf '| zero latency, %d rows (the write-back'"'"'s ceiling) | %s | %s | %s µs | target 5,000 rows/s: %.2fx |\n' "$rows" "$r_fast" "$req_fast" "$cpu_fast" "$(echo "$r_fast / 5000" | bc -l)"
printf '| %d ms a request, %d rows | %s | %s | %s µs | bound %d rows/s: %.2f; ceiling %s rows/s: %.2f; the lower (%d): %.2f (target 0.8) |\n' \
  "$latency" "$rows" "$r_slow" "$req_slow" "$cpu_slow" "$bound" "$(echo "$r_slow / $bound" | bc -l)" \
  "$r_fast" "$(echo "$r_slow / $r_fast" | bc -l)" "$lower" "$(echo "$r_slow / $lower" | bc -l)"
printf '\nworker private memory (RssAnon) in the drain of %d rows at zero latency: %d kB once %d rows were done, %d kB after all %d: %.2fx\n' \
  "$rows" "$mem_small" "$small" "$mem_big" "$rows" "$(echo "$mem_big / $mem_small" | bc -l)"

printf '\n(b) %d inputs, 256 dimensions, median of %d rounds\n\n' "$inputs" "$rounds"
printf '| case | requests sent | seconds | inputs/s | against the loop |\n|---|---|---|---|---|\n'
printf '| llm.embed_many (%s inputs a request, %s in flight) | %s | %s | %.0f | %.1fx faster |\n' \
  "$(psql -X -Atq -c 'SHOW llm.embed_inputs_per_request')" "$(psql -X -Atq -c 'SHOW llm.many_concurrency')" \
  "$many_requests" "$m" "$(echo "$inputs / $m" | bc -l)" "$(echo "$l / $m" | bc -l)"
printf '| loop of llm.embed | %s | %s | %.0f | |\n' "$loop_requests" "$l" "$(echo "$inputs / $l" | bc -l)"

printf '\n(c) the same job of %d rows through the OpenAI Batch API (endpoint /v1/embeddings, one input a line), median of %d rounds\n\n' "$rows" "$batch_rounds"
printf '| case | figure | against |\n|---|---|---|\n'
printf '| openai, one job of %d rows (%d batches) | build and send %s s, read and write back %s s: %.0f items/s | worker CPU %s s (%.0f items/s of CPU), peak RssAnon %d MB, %.1f s end to end |\n' \
  "$rows" "$nb" "$submit" "$ingest" "$(echo "$rows / ($submit + $ingest)" | bc -l)" \
  "$bcpu" "$(echo "$rows / $bcpu" | bc -l)" "$((bpeak / 1024))" "$bwall"
