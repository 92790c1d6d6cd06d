#!/usr/bin/env bash
# Memory check: the pg_regress suite with every PostgreSQL server process
# under valgrind memcheck.
#
# Usage: test/memcheck.sh [test names...]
#   Default: every test of the Makefile's REGRESS, then every file of
#   test/memcheck/sql/ (cut-offs of llm.chat_stream by LIMIT, cursors,
#   errors, subtransactions, timeouts and a vanished client; the fault
#   cases of llm.chat; the same caught in loops, so that a leak on one path
#   shows up as a multiple; a stream that ends before its query does).
#   Names given as arguments pick tests from either list and run in that
#   order; "setup" is put first when a REGRESS test is picked, and as with
#   test/regress.sh a test may need what an earlier one made (stream uses
#   chat's models).
#
# How: a private instance, set up like test/regress.sh's (pg_llm preloaded,
# its queue worker on), is started through a wrapper that runs the
# postmaster under valgrind.  Backends, the worker and the other server
# processes are forks of the postmaster, so each one is checked too, with
# its own log vg.<pid>; at its exit valgrind reports what it leaked.
# pg_regress runs against that instance and the local mock; at the end the
# instance is shut down (fast) so that every process exits and writes its
# leak report, and test/memcheck/scan.py judges the logs.
#
# A run fails when:
#   - a server process reports a memory error that test/valgrind.supp does
#     not suppress (invalid read/write/free, uninitialised value used in a
#     jump, a syscall or an address, overlapping copy, ...), anywhere;
#   - a definitely or indirectly lost block was allocated with pg_llm,
#     libcurl or json-c on its stack ("still reachable" and "possibly lost"
#     are not reported: PostgreSQL keeps its memory contexts to exit);
#   - a process died of a signal, a log has no final ERROR SUMMARY, or the
#     server log tells of a crash;
#   - a pg_regress test's output differs from its expected output.
# Leaks that involve none of those libraries are PostgreSQL's own: they are
# listed as "not ours" and do not fail the run.  test/valgrind.supp holds
# PostgreSQL's known noise, and nothing of pg_llm's.
#
# The last line is "memcheck: N passed, M failed", where the checks counted
# are one per pg_regress test (its output matched) plus one per server
# process valgrind watched (its log holds nothing that fails the run).
#
# valgrind's own exit code is not used (no --error-exitcode): a backend
# that exits with a non-zero code makes the postmaster restart every other
# process as after a crash, which would cut the suite short.
#
# What it cannot see: Debian's PostgreSQL is built without USE_VALGRIND,
# so memory that palloc hands out and takes back stays "allocated" to
# valgrind.  A use of pfree'd memory, or a malloc'd block whose only
# pointer sat in pfree'd memory, goes unseen until that memory is really
# given back to malloc; the loops and the 120 set-returning functions of
# test/memcheck/sql/cutoffs.sql are there to make that happen.  Transfers
# are linked in http.c's list, so one never released is "still reachable",
# not lost (the transaction callback frees it at the transaction's end).
#
# Time: about 2 minutes for the whole suite on this project's 2-core
# machine (the plain suite takes 25 s); MEMCHECK_TRACK_ORIGINS=1 has
# valgrind say where uninitialised values come from, at about 2.5 times
# the time.  The statement_timeout, llm.timeout and stream idle timeout
# tests give the same output under valgrind, so no test is excluded.
#
# Environment: MEMCHECK_TIMEOUT (seconds for each pg_regress run, default
# 3600), MEMCHECK_TRACK_ORIGINS=1, MEMCHECK_LOGDIR (keep the valgrind logs,
# the server log and pg_regress's results there; default: a scratch
# directory, removed at exit unless PG_LLM_KEEP=1).
source "$(dirname "$0")/lib.sh"

MC_DIR="$PG_LLM_ROOT/test/memcheck"
command -v valgrind >/dev/null || {
  PG_LLM_PACKAGES=(valgrind)
  ensure_packages
}

# The tests: REGRESS from the Makefile, and test/memcheck/sql/*.sql.
all_regress=$(make -s -C "$PG_LLM_ROOT" --no-print-directory \
  --eval='memcheck-print-regress: ; @echo $(REGRESS)' memcheck-print-regress)
all_extra=$(cd "$MC_DIR/sql" && ls *.sql | sed 's/\.sql$//' | tr '\n' ' ')
regress=()
extra=()
if [ $# -eq 0 ]; then
  read -r -a regress <<<"$all_regress"
  read -r -a extra <<<"$all_extra"
else
  for t in "$@"; do
    if [[ " $all_regress " == *" $t "* ]]; then
      regress+=("$t")
    elif [[ " $all_extra " == *" $t "* ]]; then
      extra+=("$t")
    else
      log "no such test: $t (known: $all_regress $all_extra)"
      exit 2
    fi
  done
  if [ ${#regress[@]} -gt 0 ] && [[ " ${regress[*]} " != *" setup "* ]]; then
    regress=(setup "${regress[@]}")
  fi
fi

build_install
start_mock

# Where the instance, the logs and the results go.
scratch_dir
RUN=$SCRATCH
if [ -n "${MEMCHECK_LOGDIR:-}" ]; then
  mkdir -p "$MEMCHECK_LOGDIR"
  OUT=$(cd "$MEMCHECK_LOGDIR" && pwd)
  chmod 755 "$OUT"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$OUT"; fi
  rm -rf "$OUT/valgrind" "$OUT/regress" "$OUT/memcheck" "$OUT/server.log" "$OUT/regress.out" "$OUT/memcheck.out"
else
  OUT=$RUN
fi
VGLOG="$OUT/valgrind"
mkdir -p "$VGLOG"
if [ "$(id -u)" -eq 0 ]; then chown postgres: "$VGLOG"; fi
cp "$PG_LLM_ROOT/test/valgrind.supp" "$RUN/valgrind.supp"

vg_opts=(
  --tool=memcheck
  --trace-children=yes
  --leak-check=full
  --show-leak-kinds=definite,indirect
  --errors-for-leak-kinds=definite,indirect
  --num-callers=40
  --error-limit=no
  --fullpath-after=
  --gen-suppressions=all
  --suppressions="$RUN/valgrind.supp"
  --log-file="$VGLOG/vg.%p"
)
[ "${MEMCHECK_TRACK_ORIGINS:-0}" = 1 ] && vg_opts+=(--track-origins=yes)
{
  echo '#!/bin/sh'
  printf 'exec valgrind'
  printf ' %q' "${vg_opts[@]}"
  printf ' %q "$@"\n' "$PG_BINDIR/postgres"
} > "$RUN/postgres-valgrind"
chmod 755 "$RUN/postgres-valgrind"

# The instance: small shared memory (valgrind's leak scan reads all of it
# in every process at exit), no JIT (valgrind and generated code do not
# mix), no autovacuum, and a log line prefix that ties each pid to its test
# (pg_regress names its sessions pg_regress/<test>).
port=$(free_port)
PGDATA_DIR="$RUN/data"
log "starting PostgreSQL under valgrind on port $port"
as_pg initdb -D "$PGDATA_DIR" -U postgres -A trust --no-sync >/dev/null
cat >> "$PGDATA_DIR/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$RUN'
fsync = off
shared_buffers = 16MB
max_connections = 20
max_worker_processes = 16
huge_pages = off
jit = off
autovacuum = off
log_line_prefix = '%m [%p] %b %a: '
log_connections = on
log_disconnections = on
CONF
# the settings test/regress.sh starts its instance with (keep in step)
cat >> "$PGDATA_DIR/postgresql.conf" <<'CONF'
shared_preload_libraries = 'pg_llm'
llm.database = 'contrib_regression'
llm.worker_naptime = '500ms'
llm.lease_time = '30s'
CONF
as_pg pg_ctl -D "$PGDATA_DIR" -p "$RUN/postgres-valgrind" -l "$OUT/server.log" \
  -w -t 600 start >/dev/null
PM_PID=$(head -1 "$PGDATA_DIR/postmaster.pid")
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
export PG_LLM_SERVER_LOG="$OUT/server.log"

start=$(date +%s)
regress_rc=0
results=()
cd "$PG_LLM_ROOT"
if [ ${#regress[@]} -gt 0 ]; then
  log "pg_regress under valgrind: ${regress[*]}"
  timeout "${MEMCHECK_TIMEOUT:-3600}" \
    make -s installcheck REGRESS="${regress[*]}" REGRESS_INSTANCE= \
    EXTRA_REGRESS_OPTS="--outputdir=$OUT/regress" 2>&1 | tee "$OUT/regress.out" || regress_rc=1
  results+=("$OUT/regress.out")
fi
if [ ${#extra[@]} -gt 0 ]; then
  log "pg_regress under valgrind: ${extra[*]}"
  timeout "${MEMCHECK_TIMEOUT:-3600}" \
    "$(pg_config --pkglibdir)/pgxs/src/test/regress/pg_regress" \
    --inputdir="$MC_DIR" --outputdir="$OUT/memcheck" --bindir="$PG_BINDIR" \
    --dbname=pg_llm_memcheck "${extra[@]}" 2>&1 | tee "$OUT/memcheck.out" || regress_rc=1
  results+=("$OUT/memcheck.out")
fi
for d in "$OUT/regress" "$OUT/memcheck"; do
  [ -f "$d/regression.diffs" ] && head -c 20000 "$d/regression.diffs" >&2
done

# Stop the instance so that every process exits and writes its leak
# report; the postmaster writes its own after removing its pid file.
log "stopping PostgreSQL (valgrind writes the leak reports)"
as_pg pg_ctl -D "$PGDATA_DIR" -m fast -w -t 600 stop >/dev/null || true
for _ in $(seq 1 600); do
  kill -0 "$PM_PID" 2>/dev/null || break
  sleep 0.5
done
log "done in $SECONDS s (pg_regress and shutdown: $(( $(date +%s) - start )) s); valgrind logs in $VGLOG"

python3 "$MC_DIR/scan.py" --root "$PG_LLM_ROOT" --server-log "$OUT/server.log" \
  --regress-rc "$regress_rc" "$VGLOG" "${results[@]}"
