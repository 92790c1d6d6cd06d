#!/usr/bin/env bash
# test/bench/profile_chat.sh: where does one llm.chat() call spend its time?
# A companion of bench_chat.sh for when pg_llm is well above raw libcurl.
#
# Starts a private PostgreSQL instance and the local mock (latency 0),
# warms both up, and looks at
#   SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, N) g
# next to test/bench/raw_curl making the same N requests.  Tools (any of
# them may be named; default: stat perf callgrind, in that order):
#   stat       perf stat on the statement's backend (found with
#              pg_backend_pid(), attached while the statement runs) and on
#              raw_curl: CPU time, user/system split, context switches and
#              system calls per call (syscall tracepoints, cheap enough not
#              to change the timing, unlike strace)
#   perf       perf record -g on the backend: top symbols (self time),
#              shared objects, inclusive time of the callers
#   callgrind  instructions per call (deterministic, so immune to the noise
#              of a shared machine): postgres --single under valgrind with
#              collection inside pg_llm_chat() only, and raw_curl with
#              collection inside curl_easy_perform() only.  Stops the
#              instance (single-user mode needs the data directory).
# Reports are printed and kept in test/bench/profile/ (git-ignored).
#
# usage: test/bench/profile_chat.sh [--calls N] [--no-build] [--preload] [--tls]
#                                   [stat] [perf] [callgrind]
# (--preload: shared_preload_libraries = 'pg_llm', as in bench_chat.sh;
# --tls: through nginx over HTTPS, HTTP/2 by ALPN, as bench_chat.sh --tls)
# Needs root (attaching, build_install), linux-perf and valgrind.
source "$(dirname "$0")/../lib.sh"

CALLS=5000
WARMUP=200
BUILD=1
TLS=0
PG_CONF=()
TOOLS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --calls) CALLS=$2; shift 2 ;;
    --calls=*) CALLS=${1#*=}; shift ;;
    --no-build) BUILD=0; shift ;;
    --preload) PG_CONF+=("shared_preload_libraries = 'pg_llm'"); shift ;;
    --tls) TLS=1; shift ;;
    stat|perf|callgrind) TOOLS+=("$1"); shift ;;
    -h|--help) sed -n '2,/^# Needs root/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile_chat.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ ${#TOOLS[@]} -gt 0 ] || TOOLS=(stat perf callgrind)
[[ $CALLS =~ ^[0-9]+$ ]] && [ "$CALLS" -ge 1 ] || { echo "profile_chat.sh: bad --calls" >&2; exit 2; }
# callgrind stops the instance: run it last whatever the order given
ORDERED=()
for t in stat perf callgrind; do
  [[ " ${TOOLS[*]} " == *" $t "* ]] && ORDERED+=("$t")
done

BENCH_DIR="$PG_LLM_ROOT/test/bench"
REPORTS="$BENCH_DIR/profile"
mkdir -p "$REPORTS"
cc -O2 -Wall -o "$BENCH_DIR/raw_curl" "$BENCH_DIR/raw_curl.c" -lcurl
[ "$BUILD" = 1 ] && build_install
start_postgres ${PG_CONF[@]+"${PG_CONF[@]}"}
start_mock
scratch_dir
OUT=$SCRATCH
chmod 777 "$OUT"
MOCK="http://127.0.0.1:$MOCK_PORT"
BASE="$MOCK/v1"
OPTS='{"pass_through": true}'
RAW_EXTRA=()
if [ "$TLS" = 1 ]; then
  make_certs
  start_nginx
  BASE="https://localhost:$NGINX_H2/v1"
  OPTS="{\"pass_through\": true, \"ca_file\": \"$CERTS/ca.pem\"}"
  RAW_EXTRA=(sk-mock -1 "$CERTS/ca.pem")
fi
URL="$BASE/chat/completions"
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "CREATE EXTENSION pg_llm" \
  -c "SELECT llm.create_provider('mock', 'openai', '$BASE', api_key => 'sk-mock', options => '$OPTS')" >/dev/null
# warm the mock's JIT up, so that its first requests do not count
"$BENCH_DIR/raw_curl" "$URL" 0 3000 ${RAW_EXTRA[@]+"${RAW_EXTRA[@]}"} >/dev/null

STMT="SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, $CALLS) g"
SYSCALLS=(poll epoll_wait epoll_ctl epoll_create1 close sendto recvfrom write read)

# attached TOOL_CMD...: run STMT in a warmed-up session while TOOL_CMD
# (with -p PID appended) is attached to its backend; the tool is stopped
# with SIGINT once the statement is done, before the session ends.  Leaves
# the statement's ms in STMT_MS and the backend's user and system ticks
# during it in STMT_TICKS.
attached() {
  local pidf="$OUT/backend.pid" go="$OUT/go" done="$OUT/done" release="$OUT/release"
  local st="cat /proc/\$(cat $pidf)/stat" psql_pid tool_pid i
  rm -f "$pidf" "$go" "$done" "$release"
  "${PSQL[@]}" > "$OUT/session.out" <<SQL &
SELECT pg_backend_pid() \\g $pidf
SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, $WARMUP) g;
\\! while [ ! -e $go ]; do sleep 0.05; done
\\! $st > $OUT/stat.before
\\timing on
$STMT;
\\timing off
\\! $st > $OUT/stat.after
\\! touch $done; while [ ! -e $release ]; do sleep 0.05; done
SQL
  psql_pid=$!
  for i in $(seq 1 200); do [ -s "$pidf" ] && break; sleep 0.05; done
  [ -s "$pidf" ] || { log "the session did not start"; cat "$OUT/session.out" >&2; exit 1; }
  "$@" -p "$(cat "$pidf")" &
  tool_pid=$!
  sleep 1                       # let the tool attach
  touch "$go"
  while [ ! -e "$done" ]; do
    kill -0 "$psql_pid" 2>/dev/null || { log "the session failed"; cat "$OUT/session.out" >&2; exit 1; }
    sleep 0.05
  done
  kill -INT "$tool_pid" 2>/dev/null || true
  wait "$tool_pid" || true
  touch "$release"
  wait "$psql_pid"
  STMT_MS=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' "$OUT/session.out")
  STMT_TICKS=$(cat "$OUT/stat.before" "$OUT/stat.after" |
    awk '{ sub(/^.*\) /, ""); u[NR] = $12; s[NR] = $13 } END { print u[2] - u[1], s[2] - s[1] }')
  log "statement: $CALLS calls in $STMT_MS ms ($(awk -v ms="$STMT_MS" -v n="$CALLS" 'BEGIN{printf "%.1f", ms*1000/n}') µs per call)"
}

# stat_summary FILE WHO WALL_S USER_S SYS_S: one line per call from perf stat -x.
stat_summary() {
  awk -F, -v n="$CALLS" -v who="$2" -v wall="$3" -v us="$4" -v sy="$5" '
    $3 == "task-clock" { cpu = $1 / 1000 }           # msec -> s
    $3 == "context-switches" { cs = $1 }
    $3 == "page-faults" { pf = $1 }
    $3 ~ /^syscalls:sys_enter_/ { name = $3; sub(/^syscalls:sys_enter_/, "", name); sc = sc sprintf(" %s %.2f", name, $1 / n) }
    $3 == "raw_syscalls:sys_enter" { total = $1 }
    END {
      printf "%-9s wall %6.1f µs/call, CPU %5.1f µs/call (user %.1f, system %.1f), %.2f context switches, %.2f page faults, %.2f syscalls per call:%s\n",
        who, wall * 1e6 / n, cpu * 1e6 / n, us * 1e6 / n, sy * 1e6 / n, cs / n, pf / n, total / n, sc
    }' "$1"
}

for tool in "${ORDERED[@]}"; do
  case "$tool" in
  stat)
    EV=task-clock,context-switches,page-faults,raw_syscalls:sys_enter
    for s in "${SYSCALLS[@]}"; do EV+=",syscalls:sys_enter_$s"; done
    log "perf stat: the backend during the statement"
    attached perf stat -x, -e "$EV" -o "$REPORTS/stat_backend.csv"
    hz=$(getconf CLK_TCK)
    read -r ut st <<<"$STMT_TICKS"
    stat_summary "$REPORTS/stat_backend.csv" backend "$(awk -v ms="$STMT_MS" 'BEGIN{print ms/1000}')" \
      "$(awk -v t="$ut" -v hz="$hz" 'BEGIN{print t/hz}')" "$(awk -v t="$st" -v hz="$hz" 'BEGIN{print t/hz}')" \
      > "$REPORTS/stat_summary.txt"
    log "perf stat: raw_curl, $CALLS calls (no warm-up: one connect and the process start included)"
    line=$(perf stat -x, -e "$EV" -o "$REPORTS/stat_raw_curl.csv" "$BENCH_DIR/raw_curl" "$URL" "$CALLS" 0 ${RAW_EXTRA[@]+"${RAW_EXTRA[@]}"})
    secs=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<" $line")
    /usr/bin/time -f '%U %S' -o "$OUT/time.txt" "$BENCH_DIR/raw_curl" "$URL" "$CALLS" 0 ${RAW_EXTRA[@]+"${RAW_EXTRA[@]}"} >/dev/null
    read -r us sy < "$OUT/time.txt"
    stat_summary "$REPORTS/stat_raw_curl.csv" raw_curl "$secs" "$us" "$sy" >> "$REPORTS/stat_summary.txt"
    echo "(user/system split: backend from /proc/PID/stat ticks, raw_curl from a second run under /usr/bin/time; both coarse)" \
      >> "$REPORTS/stat_summary.txt"
    cat "$REPORTS/stat_summary.txt"
    ;;
  perf)
    log "perf record -g: the backend during the statement"
    attached perf record -q -F 4999 -g -o "$OUT/perf.data"
    # (report pipelines end in head: no pipefail there)
    set +o pipefail
    {
      echo "statement under perf record: $CALLS calls in $STMT_MS ms"
      echo
      echo "== top symbols, self time (perf report --no-children) =="
      perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -40
      echo
      echo "== shared objects =="
      perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -12
      echo
      echo "== inclusive time (children; frame-pointer stacks, so libc and libcurl callers are partly lost) =="
      perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | grep -v '\[k\]' | head -40
    } > "$REPORTS/perf_backend.txt"
    set -o pipefail
    cp "$OUT/perf.data" "$REPORTS/perf_backend.data"
    cat "$REPORTS/perf_backend.txt"
    ;;
  callgrind)
    command -v valgrind >/dev/null || { log "valgrind is not installed"; exit 1; }
    log "callgrind: postgres --single, $WARMUP + $CALLS calls, collecting inside pg_llm_chat()"
    as_pg pg_ctl -D "$PGDATA_DIR" -w stop >/dev/null
    {
      echo "SELECT count(llm.chat('bench ' || g, 'mock')) FROM generate_series(1, $WARMUP) g;"
      echo "$STMT;"
    } > "$OUT/single.sql"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.pg_llm" \
      --toggle-collect=pg_llm_chat "$PG_BINDIR/postgres" --single -D "$PGDATA_DIR" \
      -c listen_addresses= postgres < "$OUT/single.sql" > "$OUT/single.out" 2> "$OUT/valgrind.pg_llm.log"
    grep -q ERROR "$OUT/single.out" && { log "single-user run failed"; cat "$OUT/single.out" >&2; exit 1; }
    log "callgrind: raw_curl, $WARMUP + $CALLS calls, collecting inside curl_easy_perform()"
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.raw_curl" \
      --toggle-collect=curl_easy_perform "$BENCH_DIR/raw_curl" "$URL" "$CALLS" "$WARMUP" ${RAW_EXTRA[@]+"${RAW_EXTRA[@]}"} \
      > /dev/null 2> "$OUT/valgrind.raw_curl.log"
    cp "$OUT/callgrind.pg_llm" "$OUT/callgrind.raw_curl" "$REPORTS/"
    /usr/bin/python3 "$BENCH_DIR/callgrind_report.py" $((CALLS + WARMUP)) \
      "$REPORTS/callgrind.pg_llm" "$REPORTS/callgrind.raw_curl" | tee "$REPORTS/callgrind_summary.txt"
    ;;
  esac
done
