#!/usr/bin/env bash
# Run the isolation specs of test/isolation (the worker's claim, reclaim and
# lease-guarded completion under concurrency) with pg_isolation_regress
# against a private instance, as the postgres user.  The instance preloads
# pg_llm (CREATE EXTENSION needs it) but runs no queue worker
# (llm.database = ''), so that only the spec's sessions touch llm.queue.
# Builds nothing: install the extension first (make install).
#
# Usage: test/isolation.sh [spec names...]   (default: every spec)
#   PG_LLM_KEEP=1 keeps the scratch directory (results, diffs, server log).
# The last line is "isolation: N passed, M failed".
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

ISO=$(pg_config --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress
[ -x "$ISO" ] || { log "pg_isolation_regress is missing (postgresql-server-dev-15)"; exit 1; }
[ -f "$(pg_config --pkglibdir)/pg_llm.so" ] ||
  { log "pg_llm is not installed: run make install first"; exit 1; }

specs=()
if [ $# -gt 0 ]; then
  for s in "$@"; do specs+=("$(basename "$s" .spec)"); done
else
  for s in "$PG_LLM_ROOT"/test/isolation/*.spec; do specs+=("$(basename "$s" .spec)"); done
fi

start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = ''"
# --use-existing leaves the database to us
as_pg psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE pg_llm_isolation" >/dev/null
as_pg psql -X -q -v ON_ERROR_STOP=1 -d pg_llm_isolation -c "CREATE EXTENSION pg_llm" >/dev/null
# no worker serves this database on purpose: its warning at enqueue is not
# what the specs are about
as_pg psql -X -q -v ON_ERROR_STOP=1 -d pg_llm_isolation \
  -c "ALTER DATABASE pg_llm_isolation SET client_min_messages = error" >/dev/null

# pg_isolation_regress wants specs/ and expected/ under its input
# directory; lay them out in a scratch directory the postgres user owns
scratch_dir
WORK=$SCRATCH
mkdir -p "$WORK/specs" "$WORK/expected"
for s in "${specs[@]}"; do
  cp "$PG_LLM_ROOT/test/isolation/$s.spec" "$WORK/specs/"
  cp "$PG_LLM_ROOT/test/isolation/$s.out" "$WORK/expected/"
done
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$WORK"

rc=0
(cd "$WORK" && as_pg "$ISO" --use-existing --host=127.0.0.1 --port="$PGPORT" --user=postgres \
  --inputdir=. --outputdir=. --dbname=pg_llm_isolation \
  "${specs[@]}") || rc=$?
if [ $rc -ne 0 ]; then
  [ -f "$WORK/regression.diffs" ] && head -c 20000 "$WORK/regression.diffs" >&2
  # shellcheck disable=SC2034  # read by cleanup() in lib.sh at exit
  PG_LLM_KEEP=1
  log "results kept in $WORK (server log: $PG_LLM_SERVER_LOG)"
fi
failed=$(grep -Ec '^(not ok|test .* FAILED)|\.\.\. FAILED' "$WORK/regression.out" 2>/dev/null || true)
total=${#specs[@]}
[ $rc -eq 0 ] || [ "${failed:-0}" -gt 0 ] || failed=$total
echo "isolation: $((total - ${failed:-0})) passed, ${failed:-0} failed"
exit $rc
