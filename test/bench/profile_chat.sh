#!/usr/bin/env bash
# test/bench/profile_chat.sh: where does one llm.chat() call spend its time?
# A companion of bench_chat.sh for when pg_llm is well above raw libcurl.
#
# Starts a private PostgreSQL instance and the local mock (latency 0),
# opens one psql session, warms it up, then attaches to that session's
# backend (found with pg_backend_pid()) while it runs
#   SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, N) g
# and, for comparison, runs test/bench/raw_curl the same number of times
# under the same tool.  Tools (each can be given; default: stat perf strace):
#   stat    perf stat (software events): CPU time, context switches and
#           page faults per call, backend vs raw_curl
#   perf    perf record -g of the backend; top symbols (self), shared
#           objects, and the call graph of pg_llm's own functions
#   strace  strace -c -f: system calls per call, backend vs raw_curl
# Reports are printed and kept in test/bench/profile/ (git-ignored).
#
# usage: test/bench/profile_chat.sh [--calls N] [--no-build] [stat] [perf] [strace]
# Needs root (perf/strace attach; build_install), linux-perf and strace.
source "$(dirname "$0")/../lib.sh"

CALLS=5000
WARMUP=200
BUILD=1
TOOLS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    stat|perf|strace) TOOLS+=("$1"); shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile_chat.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#TOOLS[@]} -gt 0 ] || TOOLS=(stat perf strace)
[[ $CALLS =~ ^[0-9]+$ ]] && [ "$CALLS" -ge 1 ] || { echo "profile_chat.sh: bad --calls" >&2; exit 2; }

BENCH_DIR="$PG_LLM_ROOT/test/bench"
REPORTS="$BENCH_DIR/profile"
mkdir -p "$REPORTS"
cc -O2 -Wall -o "$BENCH_DIR/raw_curl" "$BENCH_DIR/raw_curl.c" -lcurl
[ "$BUILD" = 1 ] && build_install
start_postgres
start_mock
scratch_dir
OUT=$SCRATCH
chmod 777 "$OUT"
MOCK="http://127.0.0.1:$MOCK_PORT"
URL="$MOCK/v1/chat/completions"
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "CREATE EXTENSION pg_llm" \
  -c "SELECT llm.create_provider('mock', 'openai', '$MOCK/v1', api_key => 'sk-mock')" >/dev/null
# warm the mock's JIT up, so that its first requests do not count
"$BENCH_DIR/raw_curl" "$URL" 0 3000 >/dev/null

STMT="SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, $CALLS) g"

# attached TOOL_CMD...: run STMT in a warmed-up session while TOOL_CMD
# (with -p PID appended) is attached to its backend; the tool is stopped
# with SIGINT once the statement is done.  Prints the statement's ms.
attached() {
  local pidf="$OUT/backend.pid" go="$OUT/go" psql_pid tool_pid i ms
  rm -f "$pidf" "$go"
  "${PSQL[@]}" > "$OUT/session.out" <<SQL &
SELECT pg_backend_pid() \\g $pidf
SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, $WARMUP) g;
\\! while [ ! -e $go ]; do sleep 0.05; done
\\timing on
$STMT;
SQL
  psql_pid=$!
  for i in $(seq 1 200); do [ -s "$pidf" ] && break; sleep 0.05; done
  "$@" -p "$(cat "$pidf")" &
  tool_pid=$!
  sleep 1                       # let the tool attach
  touch "$go"
  wait "$psql_pid"
  kill -INT "$tool_pid" 2>/dev/null || true
  wait "$tool_pid" || true
  ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$OUT/session.out")
  log "statement: $CALLS calls in $ms ms ($(awk -v ms="$ms" -v n="$CALLS" 'BEGIN{printf "%.1f", ms*1000/n}') µs per call)"
}

for tool in "${TOOLS[@]}"; do
  case "$tool" in
  stat)
    EV=task-clock,context-switches,cpu-migrations,page-faults
    log "perf stat: backend during the statement"
    attached perf stat -e "$EV" -o "$REPORTS/stat_backend.txt"
    log "perf stat: raw_curl, $CALLS calls (no warm-up: one connect and the process start included)"
    perf stat -e "$EV" -o "$REPORTS/stat_raw_curl.txt" "$BENCH_DIR/raw_curl" "$URL" "$CALLS" 0 >/dev/null
    for f in backend raw_curl; do
      awk -v n="$CALLS" -v who="$f" '
        /task-clock/ { gsub(",", "", $1); printf "%-9s CPU %.1f µs/call", who, $1 * 1000 / n }
        /context-switches/ { gsub(",", "", $1); printf ", %.2f context switches/call", $1 / n }
        /page-faults/ { gsub(",", "", $1); printf ", %.2f page faults/call", $1 / n }
        END { print "" }' "$REPORTS/stat_$f.txt"
    done | tee "$REPORTS/stat_summary.txt"
    ;;
  perf)
    log "perf record -g: backend during the statement"
    attached perf record -q -F 4999 -g -o "$OUT/perf.data"
    # (report pipelines end in head: no pipefail there)
    set +o pipefail
    {
      echo "== top symbols, self time (perf report --no-children) =="
      perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -45
      echo
      echo "== shared objects =="
      perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -15
      echo
      echo "== pg_llm functions, inclusive time (children) =="
      perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -60
    } > "$REPORTS/perf_backend.txt"
    set -o pipefail
    cp "$OUT/perf.data" "$REPORTS/perf_backend.data"
    sed -n '1,200p' "$REPORTS/perf_backend.txt"
    ;;
  strace)
    log "strace -c: backend during the statement"
    attached strace -c -f -o "$REPORTS/strace_backend.txt"
    log "strace -c: raw_curl, $CALLS calls (no warm-up: one connect and the process start included)"
    strace -c -f -o "$REPORTS/strace_raw_curl.txt" "$BENCH_DIR/raw_curl" "$URL" "$CALLS" 0 >/dev/null
    for f in backend raw_curl; do
      echo "== $f: system calls per call =="
      awk -v n="$CALLS" 'NR > 2 && $NF != "total" && $1 ~ /^[0-9.]+$/ {
          printf "  %-20s %7.2f\n", $NF, $4 / n; tot += $4 }
        END { printf "  %-20s %7.2f\n", "TOTAL", tot / n }' "$REPORTS/strace_$f.txt"
    done | tee "$REPORTS/strace_summary.txt"
    ;;
  esac
done
