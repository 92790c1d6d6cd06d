#!/usr/bin/env bash
# test/bench/bench_chat.sh: how much does one llm.chat() call cost, next to
# the least a C program (libcurl) and a typical Python client (requests)
# pay for the same HTTP request?
#
# One run starts a private PostgreSQL instance and ONE local mock provider
# (test/mock/server.js, latency 0) and measures, against that same mock, N
# sequential calls of each client (after a warm-up of W calls each):
#
#   pg_llm      SELECT count(llm.chat('bench ' || g, 'mock'))
#                 FROM generate_series(1, N) g            (psql \timing)
#   sql only    the same statement with a trivial SQL function in place of
#               llm.chat, so the executor's share is visible  (psql \timing)
#   raw libcurl test/bench/raw_curl.c: one easy handle reused (keep-alive),
#               same body and headers, response read into a buffer
#   python      test/bench/py_requests.py: requests.Session(), same body
#               and headers, .json() on each response
#
# Rounds are interleaved (pg_llm, raw, python, pg_llm, raw, python, ...)
# and the table shows each client's median; every round is printed too, so
# the noise of a shared machine is visible.  Next to the wall time, the
# CPU time (user + system, from /proc/PID/schedstat) of the client process
# (for pg_llm: its backend) and of the mock during the timed calls shows
# where a call's time goes; what is left is waiting (wake-ups, scheduling
# on a busy machine).  Nothing here passes or fails on a timing: the
# script fails only when a call fails.  The mock is reset
# before every measurement and its request and connection counters are
# checked afterwards (every client must have used one keep-alive
# connection).  Finally a short concurrent load (test/mock/load.js) on the
# same mock shows its own ceiling.
#
# With --tls, every client goes to the same mock through Debian's nginx
# (nginx-light) terminating TLS (test/lib.sh: certificates made for the
# run with openssl, EC P-256, TLS 1.3), each with that run's CA file:
# pg_llm's ca_file option, raw_curl's CURLOPT_CAINFO, requests' verify;
# pg_llm and raw libcurl speak HTTP/2 (ALPN), requests HTTP/1.1.  The
# connection counts are then the clients' connections to nginx.
#
# usage: test/bench/bench_chat.sh [--calls N] [--rounds R] [--warmup W]
#                                 [--ceiling-requests M] [--no-build] [--preload] [--tls]
#   --calls N             timed calls per client and round [5000]
#   --rounds R            interleaved rounds; the median is reported [3]
#   --warmup W            untimed calls before each measurement [200]
#   --ceiling-requests M  requests of each mock ceiling run; 0 skips it [20000]
#   --no-build            use the installed extension as it is
#   --preload             start the instance with shared_preload_libraries = 'pg_llm'
#                         (llm.chat() needs no preloading; this is for comparison)
#   --tls                 through nginx over HTTPS (see above)
#
# Needs root (build_install, and initdb runs as postgres), cc, libcurl
# headers, node and /usr/bin/python3 with python3-requests.  All traffic
# stays on 127.0.0.1.
source "$(dirname "$0")/../lib.sh"

CALLS=5000
ROUNDS=3
WARMUP=200
CEILING_REQUESTS=20000
BUILD=1
TLS=0
PG_CONF=()

usage() { sed -n '/^# usage:/,/^# stays on/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2 ;;
    --calls=*) CALLS=${1#*=}; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rounds=*) ROUNDS=${1#*=}; shift ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --warmup=*) WARMUP=${1#*=}; shift ;;
    --ceiling-requests) CEILING_REQUESTS=$2; shift 2 ;;
    --ceiling-requests=*) CEILING_REQUESTS=${1#*=}; shift ;;
    --no-build) BUILD=0; shift ;;
    --preload) PG_CONF+=("shared_preload_libraries = 'pg_llm'"); shift ;;
    --tls) TLS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench_chat.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in CALLS ROUNDS WARMUP CEILING_REQUESTS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench_chat.sh: bad value for ${v,,}: ${!v}" >&2; exit 2; }
done
[ "$CALLS" -ge 1 ] && [ "$ROUNDS" -ge 1 ] || { echo "bench_chat.sh: calls and rounds must be at least 1" >&2; exit 2; }

BENCH_DIR="$PG_LLM_ROOT/test/bench"
PYTHON=/usr/bin/python3
"$PYTHON" -c 'import requests' 2>/dev/null ||
  { log "/usr/bin/python3 cannot import requests (Debian package python3-requests)"; exit 1; }

# (b) the C client, built from source every run so it matches this libcurl
log "compiling test/bench/raw_curl.c"
cc -O2 -Wall -o "$BENCH_DIR/raw_curl" "$BENCH_DIR/raw_curl.c" -lcurl

[ "$BUILD" = 1 ] && build_install
start_postgres ${PG_CONF[@]+"${PG_CONF[@]}"}
start_mock
MOCK_PID=${PG_LLM_PIDS[-1]}
[ "$(cat "/proc/$MOCK_PID/comm" 2>/dev/null)" = node ] || { log "cannot find the mock's PID"; exit 1; }
scratch_dir
OUT=$SCRATCH
chmod 777 "$OUT"
RESULTS="$OUT/results.tsv"
: > "$RESULTS"
MOCK="http://127.0.0.1:$MOCK_PORT"
URL="$MOCK/v1/chat/completions"
BASE="$MOCK/v1"
CA_ARG=()
PROVIDER_OPTS='{"pass_through": true}'
if [ "$TLS" = 1 ]; then
  make_certs
  start_nginx
  BASE="https://localhost:$NGINX_H2/v1"
  URL="$BASE/chat/completions"
  CA_ARG=("$CERTS/ca.pem")
  PROVIDER_OPTS="{\"pass_through\": true, \"ca_file\": \"$CERTS/ca.pem\"}"
fi

PSQL=(psql -X -q -At -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "CREATE EXTENSION pg_llm" ||
  { log "CREATE EXTENSION pg_llm failed${PG_CONF[0]+}${PG_CONF[0]-; if the library must be preloaded, try --preload}"; exit 1; }
"${PSQL[@]}" <<SQL
SELECT llm.create_provider('mock', 'openai', '$BASE', api_key => 'sk-mock', options => '$PROVIDER_OPTS');
-- the same statement without the HTTP call: the executor's own share
-- (a one-expression SQL function is inlined, so this is the floor)
CREATE FUNCTION public.bench_echo(prompt text, model text) RETURNS text
LANGUAGE sql VOLATILE AS \$\$ SELECT 'echo: ' || prompt \$\$;
SQL
# one call end to end, so a setup problem shows before the timings
reply=$("${PSQL[@]}" -c "SELECT llm.chat('bench 1', 'mock')")
[ "$reply" = "echo: bench 1" ] || { log "unexpected reply from llm.chat: $reply"; exit 1; }

# Mock counters: reset before a measurement, read after it.  The request
# for /_stats comes on a connection of its own, which the mock has already
# counted when it answers: it is subtracted.
# With --tls the connections counted are the clients' to nginx (its
# stub_status, whose own request is subtracted), not nginx's to the mock.
mock_reset() {
  curl -sf -X POST "$MOCK/_reset" >/dev/null
  if [ "$TLS" = 1 ]; then NGINX_A0=$(nginx_accepts); fi
}
mock_stats() {
  local line
  line=$(curl -sf "$MOCK/_stats" | "$PYTHON" -c \
    'import json,sys; s=json.load(sys.stdin); print(s["requests"], s["connections"] - 1)')
  if [ "$TLS" = 1 ]; then line="${line% *} $(( $(nginx_accepts) - NGINX_A0 - 1 ))"; fi
  echo "$line"
}

# record ROUND CLIENT CALLS SECONDS [CLIENT_CPU MOCK_CPU]: one line of
# results, with the mock's request and connection counts when the client
# went through the mock.
record() {
  local stats="- -"
  [ "$2" = sql_only ] || stats=$(mock_stats)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${stats// /$'\t'}" \
    "${5:--1}" "${6:--1}" >> "$RESULTS"
}

# cpu_delta BEFORE AFTER LINE: seconds between the schedstat run times on
# line LINE of two files.
cpu_delta() {
  awk -v l="$3" 'FNR == l { v[FILENAME] = $1 } END { printf "%.6f", (v[ARGV[2]] - v[ARGV[1]]) / 1e9 }' "$1" "$2"
}

# ms_from_timing FILE: the milliseconds of psql's single "Time:" line.
ms_from_timing() { sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$1"; }

# (a) one psql session (one backend, so one keep-alive connection): warm-up,
# then the timed statement, with the CPU times of the backend and the mock
# read just before and after it; then the same for the SQL-only statement.
run_pg_llm() {
  local r=$1 out="$OUT/psql.$1.out" n cpu="cat /proc/\$(cat $OUT/bpid)/schedstat /proc/$MOCK_PID/schedstat"
  mock_reset
  "${PSQL[@]}" > "$out" <<SQL
SELECT pg_backend_pid() \\g $OUT/bpid
SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, $WARMUP) g;
\\! $cpu > $OUT/cpu.before
\\timing on
SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, $CALLS) g;
\\timing off
\\! $cpu > $OUT/cpu.after
SQL
  n=$(sed -n 2p "$out")
  [ "$n" = "$CALLS" ] || { log "pg_llm round $r: count was '$n'"; cat "$out" >&2; exit 1; }
  record "$r" pg_llm "$CALLS" "$(awk -v ms="$(ms_from_timing "$out")" 'BEGIN{printf "%.6f", ms/1000}')" \
    "$(cpu_delta "$OUT/cpu.before" "$OUT/cpu.after" 1)" "$(cpu_delta "$OUT/cpu.before" "$OUT/cpu.after" 2)"

  "${PSQL[@]}" > "$out" <<SQL
SELECT count(public.bench_echo('bench ' || g, 'mock')) FROM generate_series(1, $WARMUP) g;
\\timing on
SELECT count(public.bench_echo('bench ' || g, 'mock')) FROM generate_series(1, $CALLS) g;
\\timing off
SQL
  n=$(sed -n 2p "$out")
  [ "$n" = "$CALLS" ] || { log "sql-only round $r: count was '$n'"; cat "$out" >&2; exit 1; }
  record "$r" sql_only "$CALLS" "$(awk -v ms="$(ms_from_timing "$out")" 'BEGIN{printf "%.6f", ms/1000}')"
}

# (b) and (c): the client prints
# "calls=N seconds=S errors=E cpu_seconds=C mock_cpu_seconds=M".
run_client() {
  local r=$1 name=$2 line
  shift 2
  mock_reset
  line=$("$@" "$URL" "$CALLS" "$WARMUP" sk-mock "$MOCK_PID" ${CA_ARG[@]+"${CA_ARG[@]}"}) || { log "$name round $r failed: $line"; exit 1; }
  field() { sed -n "s/.* $1=\([-0-9.]*\).*/\1/p" <<<" $line"; }
  record "$r" "$name" "$CALLS" "$(field seconds)" "$(field cpu_seconds)" "$(field mock_cpu_seconds)"
}

# the mock's JIT compiles its hot path during its first requests: warm it
# up once, so that round 1 of pg_llm does not pay for it
log "warming the mock up (3000 requests)"
"$BENCH_DIR/raw_curl" "$URL" 0 3000 sk-mock -1 ${CA_ARG[@]+"${CA_ARG[@]}"} >/dev/null

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS: pg_llm ($CALLS calls)"
  run_pg_llm "$r"
  log "round $r/$ROUNDS: raw libcurl"
  run_client "$r" raw_curl "$BENCH_DIR/raw_curl"
  log "round $r/$ROUNDS: python requests"
  run_client "$r" python "$PYTHON" "$BENCH_DIR/py_requests.py"
done
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# The mock's own ceiling, on the same mock instance: load.js's raw-socket
# client, keep-alive, closed loop, 1 and 8 connections.
CEILING="$OUT/ceiling.jsonl"
: > "$CEILING"
if [ "$CEILING_REQUESTS" -gt 0 ] && [ -f "$PG_LLM_ROOT/test/mock/load.js" ]; then
  for c in 1 8; do
    log "mock ceiling: load.js, $c connection(s), $CEILING_REQUESTS requests"
    mock_reset
    node "$PG_LLM_ROOT/test/mock/load.js" --port "$MOCK_PORT" --client raw --conc "$c" \
      --requests "$CEILING_REQUESTS" --max-seconds 60 >> "$CEILING"
  done
fi

{
  echo "pg_llm chat benchmark: $CALLS sequential calls per client, $ROUNDS interleaved rounds, warm-up $WARMUP, mock latency 0${PG_CONF[0]+, $PG_CONF}$([ "$TLS" = 1 ] && echo ", over HTTPS through nginx (HTTP/2 for pg_llm and raw libcurl)")"
  echo "host: $(nproc) CPUs, load average now $(cut -d' ' -f1-3 /proc/loadavg); $(psql -X -At -c 'SHOW server_version' | cut -d' ' -f1) PostgreSQL;" \
    "libcurl $(curl-config --version | cut -d" " -f2); python requests $("$PYTHON" -c 'import requests; print(requests.__version__)'); node $(node --version)"
}
"$PYTHON" "$BENCH_DIR/bench_report.py" "$RESULTS" "$CEILING" "$WARMUP"
