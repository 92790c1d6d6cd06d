#!/usr/bin/env bash
# test/bench/bench_stream.sh: how late does each chunk of llm.chat_stream()
# reach a client, compared with the moment the provider sent it, and what
# does pg_llm add over a client that reads the provider's SSE directly?
#
# One run starts a private PostgreSQL instance and one local mock provider
# (test/mock/server.js) and creates two providers on it, 'bench_openai'
# (protocol openai) and 'bench_anthropic' (protocol anthropic, base_url
# http://127.0.0.1:PORT/v1), both sending the header `x-mock-trace: 1`
# (provider option "headers"), so the mock records the send time
# (CLOCK_REALTIME, µs) of every stream piece.  The reply is `w1 ... wW`
# (directive words=W), one piece per word, spaced by chunk_delay=D ms.
#
# test/bench/bench_stream.py then runs one warm-up stream of each case
# (same reply without chunk_delay, models *-warm; it must pair too) and R
# measured streams of each case, interleaved round by round:
#
#   direct_openai     a plain socket client reading the mock's SSE directly,
#                     stamping each event when recv() returns
#                     (bench_stream_direct.py): the baseline
#   pg_openai         stream_client (libpq single-row mode):
#                       SELECT llm.chat_stream('bench', 'bench-openai')
#   pg_copy           stream_client --copy:
#                       COPY (SELECT llm.chat_stream(...)) TO STDOUT
#   pg_anthropic      stream_client on 'bench-anthropic'
#   direct_anthropic  with --direct-anthropic only: the direct client on
#                     the Anthropic protocol (the direct client's timings do
#                     not depend on the protocol, so by default pg_anthropic
#                     is compared with direct_openai)
#
# Before each stream the mock is reset, after it GET /_trace gives that
# stream's piece send times; row k is paired with piece k once the stream
# is checked to have exactly W pieces and W rows with row k reading "wk"
# (so the OpenAI role chunk with empty content is no row).  The report
# prints, per case, the first-row latency (row 1 arrival - piece 1 send)
# and the later rows' latency distribution (min, p50, p90, p99, max, ms),
# with the last row (which leaves the mock with the end of the stream)
# also on its own line, next to the issue's targets: first row within 5 ms of the first chunk
# leaving the mock, later chunks within 5 ms of theirs; then what pg_llm
# adds over the direct client.  Nothing passes or fails on a timing (the
# machine is shared): the script fails only when a stream fails or cannot
# be paired.
#
# Clocks: the mock's times are Date.now() at its start (whole ms, rounded
# down) plus process.hrtime deltas, so they run 0 to 1 ms behind the
# clients' CLOCK_REALTIME: every latency may be over-stated by up to 1 ms,
# by the same amount for every case.  The report bounds this offset from
# the direct client's streams (request sent before piece 1 was stamped,
# rows received after their pieces left); the differences from the
# direct client are free of it.
#
# usage: test/bench/bench_stream.sh [--streams R] [--words W] [--delay D]
#                                   [--direct-anthropic] [--no-build]
#   --streams R          measured streams per case [20]
#   --words W            words (= pieces = rows) per reply, at least 2 [50]
#   --delay D            chunk_delay between pieces, ms [20]
#   --direct-anthropic   add the direct client on the Anthropic protocol
#   --no-build           use the installed extension as it is
#
# A run takes about 4 x R x (W-1) x D ms (5 x with --direct-anthropic)
# plus process start-ups: with the defaults, 80 s of streaming and about
# 1 min 40 s in all (more on a busy machine).  Needs root
# (build_install; initdb runs as postgres), cc and libpq headers, node and
# /usr/bin/python3 (standard library only).  All traffic stays on 127.0.0.1.
source "$(dirname "$0")/../lib.sh"

STREAMS=20
WORDS=50
DELAY=20
BUILD=1

usage() { sed -n '/^# usage:/,/^#   --no-build/p' "$0" | sed 's/^# \{0,1\}//'; }
DIRECT_ANTHROPIC=()
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) STREAMS=$2; shift 2 ;;
    --streams=*) STREAMS=${1#*=}; shift ;;
    --words) WORDS=$2; shift 2 ;;
    --words=*) WORDS=${1#*=}; shift ;;
    --delay) DELAY=$2; shift 2 ;;
    --delay=*) DELAY=${1#*=}; shift ;;
    --direct-anthropic) DIRECT_ANTHROPIC=(--direct-anthropic); shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench_stream.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
for v in STREAMS WORDS DELAY; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench_stream.sh: bad value for ${v,,}: ${!v}" >&2; exit 2; }
done
[ "$STREAMS" -ge 1 ] && [ "$WORDS" -ge 2 ] ||
  { echo "bench_stream.sh: streams must be at least 1 and words at least 2" >&2; exit 2; }

BENCH_DIR="$PG_LLM_ROOT/test/bench"
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

[ "$BUILD" = 1 ] && build_install
# preloaded, as the other suites run it (the library's settings include
# postmaster-level ones); llm.database = '' starts no queue worker, so
# only the streams under test run in the instance
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = ''"
start_mock
scratch_dir
WORK=$SCRATCH
DATA="$WORK/data"
mkdir -p "$DATA"

# stream_client, built into the scratch directory (test/stream_client is
# stream_test.sh's copy)
cc -O2 -Wall -I"$(pg_config --includedir)" -o "$WORK/stream_client" \
  "$PG_LLM_ROOT/test/stream_client.c" -L"$(pg_config --libdir)" -lpq
CLIENT="$WORK/stream_client"

# the upstream model strings must match bench_stream.py's direct client
MOCK="http://127.0.0.1:$MOCK_PORT"
OPENAI_MODEL="mock?words=$WORDS&chunk_delay=$DELAY"
ANTHROPIC_MODEL="claude?words=$WORDS&chunk_delay=$DELAY"
psql -X -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('bench_openai', 'openai', '$MOCK/v1', api_key => 'sk-mock',
  options => '{"headers": {"x-mock-trace": "1"}}');
SELECT llm.create_provider('bench_anthropic', 'anthropic', '$MOCK/v1', api_key => 'sk-mock',
  options => '{"headers": {"x-mock-trace": "1"}}');
SELECT llm.add_model('bench-openai', 'bench_openai', '$OPENAI_MODEL');
SELECT llm.add_model('bench-anthropic', 'bench_anthropic', '$ANTHROPIC_MODEL');
SELECT llm.add_model('bench-openai-warm', 'bench_openai', 'mock?words=$WORDS&chunk_delay=0');
SELECT llm.add_model('bench-anthropic-warm', 'bench_anthropic', 'claude?words=$WORDS&chunk_delay=0');
SQL

log "measuring with test/bench/bench_stream.py (one warm-up stream per case first)"
start=$(date +%s)
echo
echo "bench_stream: $STREAMS streams per case, $WORDS words per reply, chunk_delay $DELAY ms," \
  "PostgreSQL $(pg_config --version | awk '{print $2}'), $(nproc) cores"
if [ "$BUILD" = 1 ]; then
  echo "pg_llm built from the work tree at $(git -C "$PG_LLM_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git -C "$PG_LLM_ROOT" diff --quiet HEAD -- src sql 2>/dev/null || echo '(with uncommitted changes in src/ or sql/)')"
else
  echo "pg_llm: the installed build (--no-build)"
fi
status=0
"$PYTHON" -B "$BENCH_DIR/bench_stream.py" run --port "$MOCK_PORT" --client "$CLIENT" \
  --words "$WORDS" --delay "$DELAY" --streams "$STREAMS" --data "$DATA" \
  ${DIRECT_ANTHROPIC[@]+"${DIRECT_ANTHROPIC[@]}"} || status=$?
if [ "${PG_LLM_KEEP:-0}" = 1 ]; then
  log "measured in $(( $(date +%s) - start )) s; raw data kept in $DATA"
else
  log "measured in $(( $(date +%s) - start )) s (PG_LLM_KEEP=1 keeps the raw data)"
fi
exit $status
