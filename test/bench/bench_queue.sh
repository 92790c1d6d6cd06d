#!/usr/bin/env bash
# test/bench/bench_queue.sh: how fast does the queue worker drain llm.queue,
# next to the bound its concurrency sets, a pg_net-style batch-and-sleep
# worker and the mock provider's own ceiling; and does its memory stay flat?
#
# One run starts a private PostgreSQL instance that preloads pg_llm and
# runs one worker for the database postgres (llm.worker_naptime = 1s,
# llm.batch_size and llm.worker_concurrency as given, 50 and 50 by
# default), and ONE local mock provider (test/mock/server.js), then
# measures, each drain on an emptied queue and a fresh target table:
#
#   warm-up  500 items at zero latency (the mock's JIT, curl's connections,
#            the worker's saved plans)
#   (b)      N items, model 'mock' (zero latency), written back into
#            bench_docs.summary; target >= 3000 items/s
#   (c)      M items the same way; the worker's RSS after (b) and after (c)
#            (target: after (c) at most 10 % above after (b))
#   (a)      N items, model 'mock?latency=L', written back; against the
#            bound concurrency / latency and against a pg_net-style worker
#            that sleeps 1 s between batches: batch / (latency + 1 s)
#   (d)      the mock's ceiling for the same request shape (one request the
#            worker sent, replayed by test/mock/load.js --request with
#            its own prompt per request) at concurrency 50, zero latency and
#            latency L, in the same run, against the same mock
#   profile  (--perf only) one more drain of N items at zero latency under
#            perf record --call-graph dwarf -p <worker pid>; summarised by
#            test/bench/bench_queue_perf.py: self time by library and
#            function, and time by pg_llm call site (e.g. "run_sql <-
#            item_write at src/worker.c:642"), resolved with addr2line on a
#            copy of the pg_llm.so the worker mapped
#
# Items are enqueued in ONE transaction per drain (SELECT
# count(llm.enqueue(...)) FROM bench_docs), whose commit wakes the worker.
# A drain's rate is items / (max(finished_at) - min(started_at)) from
# llm.queue: from the first claim to the last result written.  Next to it:
# the worker's and the mock's CPU time (/proc/PID/schedstat) over the drain
# as a share of one core and per item, the share of the drain the worker
# spent runnable but waiting for a CPU, and the idle share of the whole
# machine, so the table shows which side was the bottleneck and whether the
# machine was.  The memory check reads VmRSS, RssAnon and RssShmem from
# /proc/PID/status and the worker's memory-context total
# (pg_log_backend_memory_contexts); RssShmem counts the shared buffers the
# worker has touched, which grow with the tables and are not its own, so
# the private RssAnon is shown next to VmRSS, and sampled at every 10 % of
# drains (b) and (c).  Completion is polled with short statements from one
# open psql session: a statement or transaction held open across a drain
# would keep every claimed row version alive and slow each claim down.
# Every item's status and
# every written row are counted; the script fails only when an item was
# not done or a reply was not written back, never on a timing: the
# "target" column is information for a shared 2-core machine.
#
# Settings worth knowing: synchronous_commit is left at its default (on);
# test/lib.sh sets fsync = off, so a commit writes WAL but never waits for
# the disk.  Both are printed in the header.
#
# usage: test/bench/bench_queue.sh [--items N] [--latency MS] [--big-items M]
#                                  [--batch-size B] [--concurrency C]
#                                  [--ceiling-requests R] [--max-seconds S]
#                                  [--perf] [--no-build]
#   --items N             items of drains (a) and (b) [10000]
#   --latency MS          the mock's per-request latency in (a) [50]
#   --big-items M         items of drain (c), the memory check [100000]
#   --batch-size B        llm.batch_size [50]
#   --concurrency C       llm.worker_concurrency [50]
#   --ceiling-requests R  requests of the zero-latency mock ceiling run [20000]
#   --max-seconds S       longest wait for one drain; what is left is then
#                         cancelled and the rate is taken over the done items [120]
#   --perf                profile one more zero-latency drain of N items with perf
#   --no-build            use the installed extension as it is (by default the
#                         sources are copied, built from scratch and installed)
#
# Needs root (build_install, and initdb runs as postgres), node, and perf
# and addr2line for --perf (Debian packages linux-perf, binutils).  All
# traffic stays on 127.0.0.1.  The header names the commit, the files of
# src/ and sql/ changed since, and the build id of the pg_llm.so the worker
# runs.
source "$(dirname "$0")/../lib.sh"

ITEMS=10000
LATENCY=50
BIG=100000
BATCH=50
CONC=50
CEIL_REQ=20000
MAX_SECONDS=120
PERF=0
BUILD=1
WARMUP=500

usage() { sed -n '/^# usage:/,/^# traffic stays/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --items) ITEMS=$2; shift 2 ;;
    --items=*) ITEMS=${1#*=}; shift ;;
    --latency) LATENCY=$2; shift 2 ;;
    --latency=*) LATENCY=${1#*=}; shift ;;
    --big-items) BIG=$2; shift 2 ;;
    --big-items=*) BIG=${1#*=}; shift ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --batch-size=*) BATCH=${1#*=}; shift ;;
    --concurrency) CONC=$2; shift 2 ;;
    --concurrency=*) CONC=${1#*=}; shift ;;
    --ceiling-requests) CEIL_REQ=$2; shift 2 ;;
    --ceiling-requests=*) CEIL_REQ=${1#*=}; shift ;;
    --max-seconds) MAX_SECONDS=$2; shift 2 ;;
    --max-seconds=*) MAX_SECONDS=${1#*=}; shift ;;
    --perf) PERF=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench_queue.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in ITEMS LATENCY BIG BATCH CONC CEIL_REQ MAX_SECONDS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench_queue.sh: bad value for ${v,,}: ${!v}" >&2; exit 2; }
done
[ "$ITEMS" -ge 1 ] && [ "$BIG" -ge 1 ] && [ "$BATCH" -ge 1 ] && [ "$CONC" -ge 1 ] && [ "$MAX_SECONDS" -ge 1 ] ||
  { echo "bench_queue.sh: items, big-items, batch-size, concurrency and max-seconds must be at least 1" >&2; exit 2; }
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then
  log "perf is missing (apt-get install linux-perf)"; exit 1
fi

BENCH_DIR="$PG_LLM_ROOT/test/bench"
# what is measured: the commit, and the files of src/ and sql/ changed since
SOURCE_STATE="commit $(git -C "$PG_LLM_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
dirty=$(git -C "$PG_LLM_ROOT" status --porcelain -- src sql 2>/dev/null | awk '{ print $2 }' | grep -v '\.\(o\|bc\)$' | paste -sd' ' || true)
[ -n "$dirty" ] && SOURCE_STATE+=" + uncommitted changes in: $dirty"
[ "$BUILD" = 1 ] && build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.worker_naptime = '1s'" "llm.batch_size = $BATCH" "llm.worker_concurrency = $CONC"
start_mock
MOCK_PID=${PG_LLM_PIDS[-1]}
[ "$(cat "/proc/$MOCK_PID/comm" 2>/dev/null)" = node ] || { log "cannot find the mock's PID"; exit 1; }
scratch_dir
OUT=$SCRATCH
chmod 777 "$OUT"
MOCK="http://127.0.0.1:$MOCK_PORT"

PSQL=(psql -X -q -At -v ON_ERROR_STOP=1)
"${PSQL[@]}" >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', '$MOCK/v1', api_key => 'sk-mock', options => '{"pass_through": true}') IS NOT NULL;
CREATE TABLE bench_docs (id int PRIMARY KEY, body text NOT NULL, summary text);
SQL
log "instance ready: synchronous_commit=$(psql -X -At -c 'SHOW synchronous_commit'), fsync=$(psql -X -At -c 'SHOW fsync')"

worker_pid() {
  psql -X -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'" | head -1
}
WPID=""
for _ in $(seq 1 100); do
  WPID=$(worker_pid)
  [ -n "$WPID" ] && break
  sleep 0.1
done
[ -n "$WPID" ] || { log "the pg_llm worker is not running"; cat "$PG_LLM_SERVER_LOG" >&2; exit 1; }
log "worker pid $WPID, mock pid $MOCK_PID"
# a copy of the pg_llm.so the worker mapped (for its build id, and for
# addr2line under --perf): the installed file may be replaced by another
# build while the instance runs
PG_LLM_SO=""
while read -r range _ off _ _ path; do
  if [ "$off" = 00000000 ] && [[ $path == */pg_llm.so* ]]; then
    cp "/proc/$WPID/map_files/$range" "$OUT/pg_llm.mapped.so" 2>/dev/null && PG_LLM_SO="$OUT/pg_llm.mapped.so"
    break
  fi
done < "/proc/$WPID/maps"
if [ -n "$PG_LLM_SO" ]; then
  SOURCE_STATE+="; the worker runs pg_llm.so build id $(readelf -n "$PG_LLM_SO" 2>/dev/null | sed -n 's/.*Build ID: *//p' | cut -c1-12)"
fi

mock_reset() { curl -sf -X POST "$MOCK/_reset" >/dev/null; }
# "requests connections" seen by the mock since the last reset (the
# connection of the /_stats request itself is subtracted)
mock_stats() {
  curl -sf "$MOCK/_stats" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);console.log(j.requests, j.connections-1)})'
}
# CPU nanoseconds of a process (schedstat: time on CPU)
cpu_ns() { cut -d' ' -f1 "/proc/$1/schedstat" 2>/dev/null || echo 0; }
# nanoseconds a process spent runnable but waiting for a CPU (schedstat)
runq_ns() { cut -d' ' -f2 "/proc/$1/schedstat" 2>/dev/null || echo 0; }
# "idle total" jiffies of the whole machine
machine_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t }' /proc/stat; }
# "VmRSS RssAnon RssShmem VmHWM" of a process, kB
mem_kb() {
  awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssShmem:/ { s = $2 } /^VmHWM:/ { h = $2 }
       END { print r, a, s, h }' "/proc/$1/status"
}
# bytes used in the worker's memory contexts (pg_log_backend_memory_contexts
# writes them to the server log)
ctx_used() {
  local before
  before=$(grep -c "\[$1\] LOG:  Grand total:" "$PG_LLM_SERVER_LOG" || true)
  psql -X -At -c "SELECT pg_log_backend_memory_contexts($1)" >/dev/null
  for _ in $(seq 1 50); do
    [ "$(grep -c "\[$1\] LOG:  Grand total:" "$PG_LLM_SERVER_LOG" || true)" -gt "$before" ] && break
    sleep 0.1
  done
  grep "\[$1\] LOG:  Grand total:" "$PG_LLM_SERVER_LOG" | tail -1 | sed -n 's/.*; \([0-9]*\) used.*/\1/p'
}

declare -A R
# One psql session, kept open, answers the polls: each poll is a short
# statement of its own, so no snapshot is held across a drain (a
# long-running statement or transaction would keep every claimed version of
# the queue's rows alive, and each claim's index scan would then walk past
# all of them).
coproc POLL { psql -X -At -v ON_ERROR_STOP=1 2>>"$OUT/poll.err"; }
PG_LLM_PIDS+=("$POLL_PID")
# ask SQL: one statement, its one-line answer in ANS
ask() {
  echo "$1" >&"${POLL[1]}"
  IFS= read -r -t 30 ANS <&"${POLL[0]}" || {
    log "no answer from the polling session to: $1"
    cat "$OUT/poll.err" >&2
    log "the server log ends with:"; tail -20 "$PG_LLM_SERVER_LOG" >&2
    exit 1
  }
}
# items the worker has finished (done or failed for good) since it started
finished() {
  ask "SELECT coalesce(sum(completed + failed), 0) FROM llm.workers;"
  [[ $ANS =~ ^[0-9]+$ ]] || { log "unexpected answer from llm.workers: $ANS"; cat "$OUT/poll.err" >&2; exit 1; }
}

# drain LABEL N MODEL: empty the queue and the table, enqueue N items in one
# transaction, wait until they are all finished, and record the figures in R
# (and the worker's private memory at every 10 % of the items in R[LABEL.series]).
drain() {
  local label=$1 n=$2 model=$3 c0w c0m c1w c1m j0 j1 q0 q1 line base target t0 next step
  "${PSQL[@]}" <<SQL
TRUNCATE llm.queue, bench_docs;
INSERT INTO bench_docs SELECT g, 'document ' || g FROM generate_series(1, $n) g;
VACUUM ANALYZE bench_docs;
SQL
  mock_reset
  finished; base=$ANS
  target=$((base + n))
  c0w=$(cpu_ns "$WPID"); c0m=$(cpu_ns "$MOCK_PID"); j0=$(machine_jiffies); q0=$(runq_ns "$WPID")
  log "($label) enqueueing $n items for '$model' in one transaction"
  "${PSQL[@]}" > "$OUT/drain.$label" <<SQL
SELECT clock_timestamp() AS t_enq \gset
BEGIN;
SELECT count(llm.enqueue('Summarize: ' || body, '$model', target_table => 'bench_docs',
                         target_column => 'summary', target_key => jsonb_build_object('id', id)))
FROM bench_docs;
SELECT clock_timestamp() AS t_commit \gset
COMMIT;
SELECT extract(epoch FROM :'t_commit'::timestamptz - :'t_enq'::timestamptz);
SELECT :'t_commit';
SQL
  R[$label.enq_s]=$(sed -n 2p "$OUT/drain.$label")
  R[$label.state]=drained
  R[$label.series]=""
  step=$(( n >= 10 ? n / 10 : 1 ))
  next=$step
  t0=$SECONDS
  while :; do
    finished
    if [ $((ANS - base)) -ge "$next" ]; then
      R[$label.series]+="$((ANS - base)):$(awk '/^RssAnon:/ { print $2 }' "/proc/$WPID/status") "
      while [ "$next" -le $((ANS - base)) ]; do next=$((next + step)); done
    fi
    [ "$ANS" -ge "$target" ] && break
    if [ $((SECONDS - t0)) -ge "$MAX_SECONDS" ]; then
      R[$label.state]="timed out"
      break
    fi
    sleep 0.05
  done
  c1w=$(cpu_ns "$WPID"); c1m=$(cpu_ns "$MOCK_PID"); j1=$(machine_jiffies); q1=$(runq_ns "$WPID")
  if [ "${R[$label.state]}" != drained ]; then
    log "($label) not drained after ${MAX_SECONDS}s: cancelling what is left"
    ask "UPDATE llm.queue SET status = 'failed', error = 'cancelled by bench_queue.sh' WHERE status = 'pending';"
    for _ in $(seq 1 600); do
      ask "SELECT count(*) FROM llm.queue WHERE status = 'running';"
      [ "$ANS" = 0 ] && break
      sleep 0.1
    done
  fi
  R[$label.mock]=$(mock_stats)
  line=$("${PSQL[@]}" -F ' ' <<SQL
SELECT count(*), count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'failed'),
       coalesce(extract(epoch FROM max(finished_at) FILTER (WHERE status = 'done') - min(started_at)), 0),
       coalesce(extract(epoch FROM min(started_at) - '$(sed -n 3p "$OUT/drain.$label")'::timestamptz) * 1000, 0),
       (SELECT count(*) FROM bench_docs WHERE summary = 'echo: Summarize: ' || body),
       max(attempts),
       (SELECT string_agg(DISTINCT left(error, 80), ' | ') FROM llm.queue WHERE status = 'failed')
FROM llm.queue;
SQL
)
  read -r R[$label.n] R[$label.done] R[$label.failed] R[$label.secs] R[$label.wake_ms] R[$label.written] \
    R[$label.max_attempts] R[$label.errors] <<<"$line"
  R[$label.rate]=$(awk -v d="${R[$label.done]}" -v s="${R[$label.secs]}" 'BEGIN { printf "%.0f", (s > 0 ? d / s : 0) }')
  R[$label.wcpu]=$(awk -v a="$c0w" -v b="$c1w" -v s="${R[$label.secs]}" 'BEGIN { printf "%.0f", (s > 0 ? (b - a) / 1e9 / s * 100 : 0) }')
  R[$label.mcpu]=$(awk -v a="$c0m" -v b="$c1m" -v s="${R[$label.secs]}" 'BEGIN { printf "%.0f", (s > 0 ? (b - a) / 1e9 / s * 100 : 0) }')
  R[$label.runq]=$(awk -v a="$q0" -v b="$q1" -v s="${R[$label.secs]}" 'BEGIN { printf "%.0f", (s > 0 ? (b - a) / 1e9 / s * 100 : 0) }')
  R[$label.wus]=$(awk -v a="$c0w" -v b="$c1w" -v d="${R[$label.done]}" 'BEGIN { printf "%.0f", (d > 0 ? (b - a) / 1e3 / d : 0) }')
  R[$label.mus]=$(awk -v a="$c0m" -v b="$c1m" -v d="${R[$label.done]}" 'BEGIN { printf "%.0f", (d > 0 ? (b - a) / 1e3 / d : 0) }')
  R[$label.idle]=$(awk -v a="$j0" -v b="$j1" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "%.0f", ((y[2] - x[2]) > 0 ? (y[1] - x[1]) / (y[2] - x[2]) * 100 : 0) }')
  log "($label) ${R[$label.done]}/$n done in ${R[$label.secs]} s: ${R[$label.rate]} items/s" \
    "(worker ${R[$label.wcpu]} % of a core, waiting for a CPU ${R[$label.runq]} %, ${R[$label.wus]} us/item; mock ${R[$label.mcpu]} %; machine idle ${R[$label.idle]} %)"
  # the worker must not have restarted (a crash), and every item must be
  # done and written: a correctness failure fails the run
  [ "$(worker_pid)" = "$WPID" ] || { log "the worker restarted (pid $WPID -> $(worker_pid))"; tail -50 "$PG_LLM_SERVER_LOG" >&2; exit 1; }
  if [ "${R[$label.state]}" = drained ] && { [ "${R[$label.done]}" != "$n" ] || [ "${R[$label.written]}" != "$n" ]; }; then
    log "($label) only ${R[$label.done]} of $n items done and ${R[$label.written]} written back; errors: ${R[$label.errors]}"
    exit 1
  fi
  # keep one request the worker sent, for the ceiling runs
  curl -sf "$MOCK/_requests" > "$OUT/requests.$label.json"
}

# memory LABEL: the worker's RSS and memory-context total now
memory() {
  read -r R[$1.rss] R[$1.anon] R[$1.shmem] R[$1.hwm] <<<"$(mem_kb "$WPID")"
  R[$1.ctx]=$(ctx_used "$WPID")
  R[$1.completed]=$(psql -X -At -c "SELECT sum(completed) FROM llm.workers")
  log "memory $1: VmRSS ${R[$1.rss]} kB (anon ${R[$1.anon]}, shmem ${R[$1.shmem]}), contexts ${R[$1.ctx]} bytes, ${R[$1.completed]} items completed"
}

memory start
drain warmup "$WARMUP" mock
memory warm
drain b "$ITEMS" mock
memory b
drain c "$BIG" mock
memory c
drain a "$ITEMS" "mock?latency=$LATENCY"
memory a

# (d) the mock's ceiling for the worker's request shape, same mock
ceiling() {
  local label=$1 req=$2 model=$3 n=$4
  mock_reset
  node "$PG_LLM_ROOT/test/mock/load.js" --port "$MOCK_PORT" --request "$OUT/requests.$req.json" \
    --conc 50 --requests "$n" --model "$model" --max-seconds 60 > "$OUT/ceiling.$label" ||
    { log "ceiling run $label failed"; exit 1; }
  R[$label.json]=$(cat "$OUT/ceiling.$label")
  jget() { node -e 'const j=JSON.parse(process.argv[1]); console.log(j[process.argv[2]])' "${R[$label.json]}" "$1"; }
  R[$label.rps]=$(jget rps); R[$label.errors]=$(jget errors); R[$label.p50]=$(jget p50_ms)
  R[$label.p99]=$(jget p99_ms); R[$label.bytes]=$(jget request_bytes); R[$label.requests]=$(jget requests)
  log "ceiling $label: ${R[$label.rps]} req/s (${R[$label.errors]} errors)"
}
LAT_REQ=$(( LATENCY > 0 ? 50 * 5000 / LATENCY : CEIL_REQ ))
[ "$LAT_REQ" -gt "$CEIL_REQ" ] && LAT_REQ=$CEIL_REQ
[ "$LAT_REQ" -lt 500 ] && LAT_REQ=500
node "$PG_LLM_ROOT/test/mock/load.js" --port "$MOCK_PORT" --request "$OUT/requests.b.json" \
  --conc 8 --requests 2000 --max-seconds 10 >/dev/null  # warm-up
ceiling d0 b mock "$CEIL_REQ"
ceiling dl a "mock?latency=$LATENCY" "$LAT_REQ"

# optional profile of one more zero-latency drain
if [ "$PERF" = 1 ]; then
  PERF_DATA="$OUT/perf.data"
  perf record -q -F 999 --call-graph dwarf,16384 -p "$WPID" -o "$PERF_DATA" 2>"$OUT/perf.err" &
  PERF_PID=$!
  PG_LLM_PIDS+=("$PERF_PID")
  sleep 0.5
  drain p "$ITEMS" mock
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
fi

# ---- report ----
fmt() { awk -v x="$1" 'BEGIN { if (x == "" ) print "-"; else if (x + 0 >= 100) printf "%.0f", x; else printf "%.2f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
BOUND=$(awk -v c="$CONC" -v l="$LATENCY" 'BEGIN { if (l > 0) printf "%.1f", c / (l / 1000); else print 0 }')
PGNET=$(awk -v b="$BATCH" -v l="$LATENCY" 'BEGIN { printf "%.1f", b / (l / 1000 + 1) }')
RSS_RATIO=$(ratio "${R[c.rss]}" "${R[b.rss]}")
ANON_RATIO=$(ratio "${R[c.anon]}" "${R[b.anon]}")
# the largest RssAnon sampled during a drain: one reading of a ~10 MB heap
# moves by a megabyte or two as malloc keeps or returns free chunks
peak() { tr ' ' '\n' <<<"$1" | awk -F: 'NF == 2 && $2 > m { m = $2 } END { print m + 0 }'; }
PEAK_RATIO=$(ratio "$(peak "${R[c.series]}")" "$(peak "${R[b.series]}")")
verdict() { awk -v m="$1" -v t="$2" -v dir="$3" 'BEGIN { if (m == "" || m == "-") print "-"; else if ((dir == "ge" && m + 0 >= t + 0) || (dir == "le" && m + 0 <= t + 0)) print "met"; else print "MISSED" }'; }

echo
echo "pg_llm queue benchmark: batch $BATCH, $CONC in flight, mock latency ${LATENCY} ms for (a); write-back into bench_docs.summary"
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $(psql -X -At -c 'SHOW server_version' | cut -d' ' -f1);" \
  "synchronous_commit=$(psql -X -At -c 'SHOW synchronous_commit') (default), fsync=$(psql -X -At -c 'SHOW fsync') (set by test/lib.sh), shared_buffers=$(psql -X -At -c 'SHOW shared_buffers');" \
  "libcurl $(curl --version | head -1 | cut -d' ' -f2); node $(node --version)"
echo "source: $SOURCE_STATE"
echo
echo "drains (rate = done items / (last finished_at - first started_at); cpu% = share of one core over that span;"
echo "        runq% = share of the span the worker was runnable but waiting for a CPU; idle% = idle share of the whole machine)"
printf '%-8s %-16s %7s %7s %7s %7s %8s %5s %5s %5s %5s %6s %6s %5s %5s\n' run model items done written seconds 'items/s' \
  'wake' 'wrk' 'wrk' 'mock' 'wrk' 'mock' 'idle' 'mock'
printf '%-8s %-16s %7s %7s %7s %7s %8s %5s %5s %5s %5s %6s %6s %5s %5s\n' '' '' '' '' '' '' '' \
  'ms' 'cpu%' 'runq%' 'cpu%' 'us/it' 'us/it' '%' 'conns'
for l in warmup b c a p; do
  [ -n "${R[$l.n]:-}" ] || continue
  case $l in
    warmup) name=warm-up; model=mock ;;
    b) name='(b)'; model=mock ;;
    c) name='(c)'; model=mock ;;
    a) name='(a)'; model="mock?latency=$LATENCY" ;;
    p) name=perf; model=mock ;;
  esac
  printf '%-8s %-16s %7s %7s %7s %7s %8s %5s %5s %5s %5s %6s %6s %5s %5s\n' "$name" "$model" "${R[$l.n]}" "${R[$l.done]}" \
    "${R[$l.written]}" "$(awk -v s="${R[$l.secs]}" 'BEGIN { printf "%.2f", s }')" "${R[$l.rate]}" \
    "$(awk -v s="${R[$l.wake_ms]}" 'BEGIN { printf "%.0f", s }')" "${R[$l.wcpu]}" "${R[$l.runq]}" "${R[$l.mcpu]}" \
    "${R[$l.wus]}" "${R[$l.mus]}" "${R[$l.idle]}" "${R[$l.mock]#* }"
done
echo "(enqueue of the items in one transaction took: warm-up $(fmt "${R[warmup.enq_s]}") s, (b) $(fmt "${R[b.enq_s]}") s, (c) $(fmt "${R[c.enq_s]}") s, (a) $(fmt "${R[a.enq_s]}") s; not part of the rates)"
echo
echo "worker memory (pid $WPID; RSS includes the shared buffers it touched, anon is its private memory)"
printf '%-24s %12s %10s %10s %10s %10s %14s\n' point 'items done' 'VmRSS kB' 'anon kB' 'shmem kB' 'VmHWM kB' 'contexts B'
for l in start warm b c a; do
  case $l in
    start) name='started, idle' ;; warm) name='after warm-up' ;; b) name="after (b) $ITEMS" ;;
    c) name="after (c) $BIG" ;; a) name="after (a) $ITEMS" ;;
  esac
  printf '%-24s %12s %10s %10s %10s %10s %14s\n' "$name" "${R[$l.completed]:-0}" "${R[$l.rss]}" "${R[$l.anon]}" \
    "${R[$l.shmem]}" "${R[$l.hwm]}" "${R[$l.ctx]:--}"
done
for l in b c; do
  echo "RssAnon kB of the worker during ($l), at every 10 % of the items (items:kB): ${R[$l.series]}"
done
echo
echo "mock ceiling, same mock, the worker's request shape ($(fmt "${R[d0.bytes]}") bytes), $((50)) keep-alive connections, closed loop"
printf '%-24s %9s %7s %9s %9s %9s\n' model requests errors 'req/s' 'p50 ms' 'p99 ms'
printf '%-24s %9s %7s %9s %9s %9s\n' mock "${R[d0.requests]}" "${R[d0.errors]}" "${R[d0.rps]}" "${R[d0.p50]}" "${R[d0.p99]}"
printf '%-24s %9s %7s %9s %9s %9s\n' "mock?latency=$LATENCY" "${R[dl.requests]}" "${R[dl.errors]}" "${R[dl.rps]}" "${R[dl.p50]}" "${R[dl.p99]}"
echo
echo "summary"
printf '%-58s %14s %14s %8s\n' measure target measured verdict
printf '%-58s %14s %14s %8s\n' "(a) items/s, ${LATENCY} ms, batch $BATCH, $CONC in flight, write-back" - "${R[a.rate]}" -
printf '%-58s %14s %14s %8s\n' "    / bound $CONC / ${LATENCY} ms = $BOUND/s" "1.00 at best" "$(ratio "${R[a.rate]}" "$BOUND")" -
printf '%-58s %14s %14s %8s\n' "    / pg_net-style $BATCH / (${LATENCY} ms + 1 s) = $PGNET/s" "> 1" "$(ratio "${R[a.rate]}" "$PGNET")" \
  "$(verdict "$(ratio "${R[a.rate]}" "$PGNET")" 1 ge)"
printf '%-58s %14s %14s %8s\n' "    / mock ceiling at ${LATENCY} ms, conc 50 (${R[dl.rps]}/s)" - "$(ratio "${R[a.rate]}" "${R[dl.rps]}")" -
printf '%-58s %14s %14s %8s\n' "(b) items/s, 0 ms, write-back" ">= 3000" "${R[b.rate]}" "$(verdict "${R[b.rate]}" 3000 ge)"
printf '%-58s %14s %14s %8s\n' "    / mock ceiling at 0 ms, conc 50 (${R[d0.rps]}/s)" - "$(ratio "${R[b.rate]}" "${R[d0.rps]}")" -
printf '%-58s %14s %14s %8s\n' "    worker CPU per item in (b): ${R[b.wus]} us = items/s on one free core" - \
  "$(awk -v u="${R[b.wus]}" 'BEGIN { if (u > 0) printf "%.0f", 1e6 / u; else print "-" }')" -
printf '%-58s %14s %14s %8s\n' "(c) items/s, 0 ms, write-back, $BIG items" ">= 3000" "${R[c.rate]}" "$(verdict "${R[c.rate]}" 3000 ge)"
printf '%-58s %14s %14s %8s\n' "(c) worker VmRSS after $BIG / after $ITEMS" "<= 1.10" "$RSS_RATIO" "$(verdict "$RSS_RATIO" 1.10 le)"
printf '%-58s %14s %14s %8s\n' "    (VmRSS grows with the shared buffers touched: RssShmem)" - "${R[b.shmem]}->${R[c.shmem]} kB" -
printf '%-58s %14s %14s %8s\n' "    RssAnon (private) after $BIG / after $ITEMS" "<= 1.10" "$ANON_RATIO" "$(verdict "$ANON_RATIO" 1.10 le)"
printf '%-58s %14s %14s %8s\n' "    RssAnon peak during (c) / peak during (b)" "<= 1.10" "$PEAK_RATIO" "$(verdict "$PEAK_RATIO" 1.10 le)"
printf '%-58s %14s %14s %8s\n' "    memory contexts after $BIG / after $ITEMS" "<= 1.10" "$(ratio "${R[c.ctx]}" "${R[b.ctx]}")" \
  "$(verdict "$(ratio "${R[c.ctx]}" "${R[b.ctx]}")" 1.10 le)"
printf '%-58s %14s %14s %8s\n' "(d) mock ceiling, 0 ms, conc 50, req/s" - "${R[d0.rps]}" -
bott=worker
awk -v r="${R[b.rate]}" -v m="${R[d0.rps]}" 'BEGIN { exit !(r >= 0.8 * m) }' && bott=mock
printf '%-58s %14s %14s %8s\n' "    bottleneck at 0 ms (worker < 80 % of the mock's ceiling)" - "$bott" -

if [ "$PERF" = 1 ]; then
  echo
  echo "perf record -F 999 --call-graph dwarf -p $WPID (the worker) during drain 'perf' ($ITEMS items, 0 ms)"
  perf script -i "$PERF_DATA" -F ip,sym,dso > "$OUT/perf.txt" 2>/dev/null || true
  python3 "$BENCH_DIR/bench_queue_perf.py" "$OUT/perf.txt" "$PG_LLM_SO" 30 "$([ "$BUILD" = 1 ] && echo source)" || true
  if [ "${PG_LLM_KEEP:-0}" = 1 ]; then echo "perf data kept in $PERF_DATA"; fi
fi
