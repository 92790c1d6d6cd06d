#!/usr/bin/env bash
# test/bench/bench_tls.sh: what HTTPS and HTTP/2 cost next to plain HTTP,
# side by side in one run, and the drains at a real provider's latency
# with a thousand requests in flight.
#
# One run starts a private PostgreSQL instance that preloads pg_llm (one
# queue worker for the database postgres), ONE local mock provider
# (test/mock/server.js) and Debian's nginx (nginx-light) in front of it as
# the TLS and HTTP/2 terminator, with certificates made for the run by
# openssl (test/lib.sh: make_certs, start_nginx; EC P-256 keys, TLS 1.3).
# Every transport goes through the same nginx, so the columns differ by
# TLS and HTTP version only:
#
#   plain   http://127.0.0.1:<nginx plain port>/v1    HTTP/1.1
#   h1      https://localhost:<nginx h1 port>/v1      a server offering HTTP/1.1 only
#   h2      https://localhost:<nginx h2 port>/v1      HTTP/2 (ALPN)
#
# The server runs with a soft limit of 1024 open files (ulimit -Sn 1024
# before pg_ctl start, as systemd gives by default), so the thousand in
# flight go through pg_llm's raising of that limit.
#
# Cases, R interleaved rounds, the median shown (every round is printed):
#   many-first   llm.chat_many of 50 prompts at 50 ms (model
#                'mock?latency=50'), the first statement of a new session
#                (a new backend: no connection, no TLS session, no CA store
#                yet); and the connections nginx accepted for it
#   many-second  the same statement again in that session
#   chat-first   one llm.chat at 0 ms, the first statement of a new session
#   drain-first  the queue worker's first drain after a restart of the
#                server: 2,000 items at 50 ms, llm.worker_concurrency 50
#                (items / (last finished_at - first started_at))
# and, unless --no-drains, the drains at 2 s a request (plain HTTP and h2):
#   queue-2s     10,000 queued items at 2 s, llm.worker_concurrency 1000:
#                items/s against the bound 1000 / 2 s = 500/s (target
#                400/s or more)
#   many-2s      llm.chat_many of 5,000 prompts at 2 s,
#                llm.many_concurrency 1000: seconds against the bound
#                5000 / 1000 * 2 s = 10 s (target 12 s or less)
# Ratios: HTTPS against plain in the same round (target: many-first within
# 1.5x, drain-first within 1.15x), the 2 s drains against their bounds.
# Nothing passes or fails on a timing; the script fails when a call fails
# or an item is not done.
#
# usage: test/bench/bench_tls.sh [--rounds R] [--no-drains] [--no-build]
# Needs root (build_install, initdb as postgres), node, nginx-light,
# openssl.  All traffic stays on 127.0.0.1.
source "$(dirname "$0")/../lib.sh"

ROUNDS=3
DRAINS=1
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --no-drains) DRAINS=0; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,/^# openssl/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_tls.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $ROUNDS =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] || { echo "bench_tls.sh: bad --rounds" >&2; exit 2; }

[ "$BUILD" = 1 ] && build_install
export PG_LLM_NOFILE_SOFT=1024
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.worker_naptime = '200ms'" "max_connections = 50"
start_mock
MOCK_PID=${PG_LLM_PIDS[-1]}
make_certs
start_nginx
scratch_dir
OUT=$SCRATCH
RESULTS=$OUT/results.tsv
: > "$RESULTS"

declare -A URL=(
  [plain]="http://127.0.0.1:$NGINX_PLAIN/v1"
  [h1]="https://localhost:$NGINX_H1/v1"
  [h2]="https://localhost:$NGINX_H2/v1"
)
TRANSPORTS=(plain h1 h2)
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider(t, 'openai', u, api_key => 'sk-mock',
                           options => jsonb_build_object('ca_file', '$CERTS/ca.pem'))
FROM (VALUES ('plain', '${URL[plain]}'), ('h1', '${URL[h1]}'), ('h2', '${URL[h2]}')) v(t, u);
SELECT llm.add_model(name || '-50ms', name, 'mock?latency=50') FROM llm.provider;
SELECT llm.add_model(name || '-0ms', name, 'mock') FROM llm.provider;
SELECT llm.add_model(name || '-2s', name, 'mock?latency=2000') FROM llm.provider;
CREATE TABLE bench_docs (id int PRIMARY KEY, body text, summary text);
SQL
# one call over each, and 50 at once so that nginx has its connections
# to the mock open before anything is timed
for t in "${TRANSPORTS[@]}"; do
  [ "$(psql -X -Atq -c "SELECT llm.chat('hello', '$t-0ms')")" = "echo: hello" ] ||
    { log "llm.chat over $t failed"; exit 1; }
  psql -X -Atq -c "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'warm ' || g FROM generate_series(1, 50) g), '$t-50ms')" >/dev/null
done

# record ROUND CASE TRANSPORT SECONDS [CONNECTIONS]
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:--}" >> "$RESULTS"; }
# the "Time:" lines of psql \timing, in seconds, one a line
times_of() { sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$1" | awk '{printf "%.4f\n", $1 / 1000}'; }

# a new session: chat_many of 50 at 50 ms twice; connections of the first
run_many() {
  local r=$1 t=$2 out=$OUT/many.out a b
  a=$(nginx_accepts)
  psql -X -q -At -v ON_ERROR_STOP=1 > "$out" <<SQL
\\timing on
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'r$r first ' || g FROM generate_series(1, 50) g), '$t-50ms') WHERE error IS NULL;
\\timing off
SELECT 'between' FROM pg_sleep(0.05);
\\timing on
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'r$r second ' || g FROM generate_series(1, 50) g), '$t-50ms') WHERE error IS NULL;
SQL
  b=$(nginx_accepts)
  [ "$(grep -c '^50$' "$out")" = 2 ] || { log "chat_many over $t: not 50 replies"; cat "$out" >&2; exit 1; }
  mapfile -t secs < <(times_of "$out")
  record "$r" many-first "$t" "${secs[0]}" $((b - a - 1))
  record "$r" many-second "$t" "${secs[1]}"
}

# a new session: one llm.chat at 0 ms
run_chat() {
  local r=$1 t=$2 out=$OUT/chat.out
  psql -X -q -At -v ON_ERROR_STOP=1 > "$out" <<SQL
\\timing on
SELECT llm.chat('r$r first call', '$t-0ms');
SQL
  grep -q "^echo: r$r first call" "$out" || { log "llm.chat over $t failed"; cat "$out" >&2; exit 1; }
  record "$r" chat-first "$t" "$(times_of "$out" | head -1)"
}

# wait until the queue has no pending or running item; at most $1 seconds
wait_drained() {
  local i
  for i in $(seq 1 $(($1 * 10))); do
    [ "$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')")" = 0 ] && return 0
    sleep 0.1
  done
  log "the queue did not drain in $1 s"; return 1
}

# N items on model M, enqueued in one transaction after the queue was
# emptied; prints the drain's rate (items/s) and checks every item
drain() {
  local n=$1 m=$2 done_n rate
  psql -X -q -c "DELETE FROM llm.queue; TRUNCATE bench_docs; INSERT INTO bench_docs SELECT g, 'doc ' || g FROM generate_series(1, $n) g"  >/dev/null
  psql -X -q -c "SELECT count(llm.enqueue(body, '$m', target_table => 'bench_docs', target_column => 'summary', target_key => jsonb_build_object('id', id))) FROM bench_docs" >/dev/null
  wait_drained 600
  done_n=$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status = 'done'")
  [ "$done_n" = "$n" ] || { log "drain of $m: $done_n of $n items done"; psql -X -c "SELECT status, error, count(*) FROM llm.queue GROUP BY 1, 2" >&2; exit 1; }
  rate=$(psql -X -Atq -c "SELECT round(count(*) / extract(epoch FROM max(finished_at) - min(started_at))::numeric, 1) FROM llm.queue")
  echo "$rate"
}

# the worker's first drain after the server (and so the worker) started
run_drain_first() {
  local r=$1 t=$2 rate
  restart_postgres
  psql -X -Atq -c "SELECT 1" >/dev/null
  rate=$(drain 2000 "$t-50ms")
  # as seconds, so that lower is better in every row
  record "$r" drain-first "$t" "$(awk -v r="$rate" 'BEGIN {printf "%.4f", 2000 / r}')"
}

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TRANSPORTS[@]}"; do
    log "round $r/$ROUNDS: $t"
    run_many "$r" "$t"
    run_chat "$r" "$t"
  done
  for t in "${TRANSPORTS[@]}"; do
    log "round $r/$ROUNDS: first drain over $t"
    run_drain_first "$r" "$t"
  done
done

if [ "$DRAINS" = 1 ]; then
  psql -X -q -c "ALTER SYSTEM SET llm.worker_concurrency = 1000" -c "ALTER SYSTEM SET llm.batch_size = 1000"
  restart_postgres
  for t in plain h2; do
    log "10,000 queued items at 2 s, 1000 in flight, over $t"
    rate=$(drain 10000 "$t-2s")
    record 1 queue-2s "$t" "$rate"
    log "chat_many of 5,000 prompts at 2 s, 1000 in flight, over $t"
    out=$OUT/many2s.out
    psql -X -q -At -v ON_ERROR_STOP=1 > "$out" <<SQL
SET llm.many_concurrency = 1000;
\\timing on
SELECT count(*) FROM llm.chat_many(ARRAY(SELECT 'big ' || g FROM generate_series(1, 5000) g), '$t-2s') WHERE error IS NULL;
SQL
    grep -q '^5000$' "$out" || { log "chat_many of 5,000 over $t failed"; cat "$out" >&2; exit 1; }
    record 1 many-2s "$t" "$(times_of "$out" | head -1)"
  done
fi
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "pg_llm TLS benchmark: $ROUNDS interleaved rounds, median shown; host $(nproc) CPUs, load average now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "libcurl $(curl-config --version | cut -d' ' -f2), $(openssl version | cut -d' ' -f1-2), nginx $(nginx -v 2>&1 | sed 's|.*/||'), PostgreSQL $(psql -X -Atq -c 'SHOW server_version' | cut -d' ' -f1), soft limit on open files 1024"
python3 - "$RESULTS" <<'PY'
import sys, statistics
from collections import defaultdict
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
v = defaultdict(list)
conns = defaultdict(list)
for r, case, t, s, c in rows:
    v[(case, t)].append(float(s))
    if c != '-':
        conns[(case, t)].append(int(c))
med = {k: statistics.median(x) for k, x in v.items()}
def cell(case, t):
    return '%.3f s' % med[(case, t)] if (case, t) in med else '-'
def ratio(case, t):
    if (case, t) not in med or (case, 'plain') not in med:
        return '-'
    return '%.2fx' % (med[(case, t)] / med[(case, 'plain')])
print()
print('| case | plain HTTP | HTTPS (HTTP/1.1) | HTTPS (HTTP/2) | h1 / plain | h2 / plain | target |')
print('|---|---|---|---|---|---|---|')
names = {
    'many-first': ('`chat_many` of 50 prompts at 50 ms, in a new session', 'within 1.5x'),
    'many-second': ('the same, second statement in that session', ''),
    'chat-first': ('one `llm.chat` in a new session (0 ms)', ''),
    'drain-first': ('worker, 2,000 items at 50 ms, first drain after start', 'within 1.15x'),
}
for case, (label, target) in names.items():
    print('| %s | %s | %s | %s | %s | %s | %s |' % (label, cell(case, 'plain'), cell(case, 'h1'), cell(case, 'h2'),
          ratio(case, 'h1'), ratio(case, 'h2'), target))
c = {t: max(conns[('many-first', t)]) if conns[('many-first', t)] else None for t in ('plain', 'h1', 'h2')}
print('| connections for 50 concurrent requests (most in a round) | %s | %s | %s | | | h2: at most 2 |' % (c['plain'], c['h1'], c['h2']))
print()
print('every round (seconds; connections):')
for case in names:
    for t in ('plain', 'h1', 'h2'):
        if (case, t) in v:
            extra = ('; ' + ' '.join(map(str, conns[(case, t)]))) if conns[(case, t)] else ''
            print('  %-12s %-5s %s%s' % (case, t, ' '.join('%.3f' % x for x in v[(case, t)]), extra))
if ('queue-2s', 'plain') in med or ('many-2s', 'plain') in med:
    print()
    print('| drain at 2 s a request, 1000 in flight | plain HTTP | HTTPS (HTTP/2) | bound | plain / bound | h2 / bound | target |')
    print('|---|---|---|---|---|---|---|')
    q = {t: med.get(('queue-2s', t)) for t in ('plain', 'h2')}
    m = {t: med.get(('many-2s', t)) for t in ('plain', 'h2')}
    f = lambda x, fmt: fmt % x if x is not None else '-'
    print('| 10,000 queued items (items/s) | %s | %s | 500/s | %s | %s | 400/s or more |' % (
        f(q['plain'], '%.0f/s'), f(q['h2'], '%.0f/s'),
        f(q['plain'] and q['plain'] / 500, '%.2f'), f(q['h2'] and q['h2'] / 500, '%.2f')))
    print('| `chat_many` of 5,000 prompts (seconds) | %s | %s | 10 s | %s | %s | 12 s or less |' % (
        f(m['plain'], '%.2f s'), f(m['h2'], '%.2f s'),
        f(m['plain'] and m['plain'] / 10, '%.2fx'), f(m['h2'] and m['h2'] / 10, '%.2fx')))
PY
