#!/usr/bin/env bash
# Hops between functions on two paths through the queue worker, counted
# from a run, not by hand:
#  - one queued item from its claim to its write-back (realtime, with a
#    target row), the worker's first and one after it;
#  - one batch answer: each answer a batch gets from its provider (inline,
#    openai: upload, create, polls, downloads; anthropic: create, polls,
#    download), each handled from the transfer's end to the next request.
# A copy of the tree is built with -finstrument-functions and the hooks of
# test/bench/trace/trace.c (every entry and exit of a function of pg_llm,
# per process), installed, and run on the mock with one item of each kind;
# test/bench/hops.py reads the worker's trace.  The normal build is
# installed again at the end.
#   bash test/bench/hops.sh            (prints the figures; KEEP=1 keeps the traces)
source "$(dirname "$0")/../lib.sh"
scratch_dir
BUILD=$SCRATCH
cp -r "$PG_LLM_ROOT/Makefile" "$PG_LLM_ROOT/pg_llm.control" "$PG_LLM_ROOT/src" "$PG_LLM_ROOT/sql" "$BUILD/"
find "$BUILD" \( -name "*.o" -o -name "*.so" -o -name "*.bc" \) -delete
cp "$PG_LLM_ROOT/test/bench/trace/trace.c" "$BUILD/src/trace.c"
log "building an instrumented pg_llm"
# every object instrumented; trace.c's own functions are marked not to be
objs=" $(make -C "$BUILD" -s --no-print-directory --eval 'print-objs: ; @echo $(OBJS)' print-objs) "
case $objs in *" src/trace.o "*) ;; *) objs="$objs src/trace.o" ;; esac
make -C "$BUILD" -s -j2 COPT="-finstrument-functions -g" OBJS="$objs" \
  SHLIB_LINK="$(pkg-config --libs libcurl json-c) -ldl" >/dev/null
make -C "$BUILD" -s install OBJS="$objs" >/dev/null
trap 'build_install; cleanup' EXIT

scratch_dir
TRACE_DIR=$SCRATCH
export PG_LLM_TRACE_DIR=$TRACE_DIR
[ "$(id -u)" -ne 0 ] || chown postgres: "$TRACE_DIR"
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.batch_poll_interval = 1" "llm.worker_naptime = '200ms'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.create_provider('relay', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
                           options => '{"batch_api": "inline"}');
SELECT llm.create_provider('claude', 'anthropic', 'http://127.0.0.1:$MOCK_PORT/anthropic/v1', api_key => 'sk-mock');
SELECT llm.add_model('oai', 'mock', 'gpt-4o-mini', input_usd_per_mtok => 0.15, output_usd_per_mtok => 0.6);
SELECT llm.add_model('inl', 'relay', 'deepseek-chat');
SELECT llm.add_model('ant', 'claude', 'claude-haiku');
CREATE TABLE docs (id int PRIMARY KEY, summary text);
INSERT INTO docs VALUES (0), (1), (2), (3), (4);
SQL
wait_done() {
  local i
  for i in $(seq 1 300); do
    [ "$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status NOT IN ('done', 'failed')")" = 0 ] && return 0
    sleep 0.1
  done
  log "the queue did not drain"; return 1
}
worker=$(psql -X -Atq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker'")
run() {  # a scenario: its name to the worker's trace, then the enqueue
  echo "M $1" >> "$TRACE_DIR/trace.$worker"
  psql -X -q -v ON_ERROR_STOP=1 -c "$2" >/dev/null
  wait_done
  sleep 1.5   # the worker's pass that follows (usage, the batch's end)
}
sleep 1
run first "SELECT llm.enqueue('hello', 'oai', target_table => 'docs', target_column => 'summary', target_key => '{\"id\": 0}')"
run item "SELECT llm.enqueue('hello', 'oai', target_table => 'docs', target_column => 'summary', target_key => '{\"id\": 1}')"
run inline "SELECT llm.enqueue('hello', 'inl', target_table => 'docs', target_column => 'summary', target_key => '{\"id\": 2}', via => 'batch_api')"
run openai "SELECT llm.enqueue('hello', 'oai', target_table => 'docs', target_column => 'summary', target_key => '{\"id\": 3}', via => 'batch_api')"
run anthropic "SELECT llm.enqueue('hello', 'ant', target_table => 'docs', target_column => 'summary', target_key => '{\"id\": 4}', via => 'batch_api')"
psql -X -Atq -c "SELECT id, status, COALESCE(error, '') FROM llm.queue ORDER BY id" >&2
echo "M end" >> "$TRACE_DIR/trace.$worker"
python3 "$PG_LLM_ROOT/test/bench/hops.py" "$(pg_config --pkglibdir)/pg_llm.so" "$TRACE_DIR/trace.$worker"
if [ "${KEEP:-0}" = 1 ]; then
  cp "$TRACE_DIR/trace.$worker" /tmp/pg_llm_worker_trace
  cp "$(pg_config --pkglibdir)/pg_llm.so" /tmp/pg_llm_worker_trace.so
  log "the worker's trace is in /tmp/pg_llm_worker_trace (library: /tmp/pg_llm_worker_trace.so)"
fi
