#!/usr/bin/env bash
# Run the pg_regress suite against a private instance and the local mock.
# Usage: test/regress.sh [test names...]   (default: the Makefile's REGRESS)
# Results land in results/ and regression.diffs, as with make installcheck.
source "$(dirname "$0")/lib.sh"
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'contrib_regression'" \
  "llm.worker_naptime = '500ms'" "llm.lease_time = '30s'"
start_mock
cd "$PG_LLM_ROOT"
rc=0
# the suite on this instance, not on one of pg_regress's own
if [ $# -gt 0 ]; then
  make -s installcheck REGRESS="$*" REGRESS_INSTANCE= || rc=$?
else
  make -s installcheck REGRESS_INSTANCE= || rc=$?
fi
if [ $rc -ne 0 ]; then
  [ -f regression.diffs ] && head -c 20000 regression.diffs >&2
  log "the last lines of the server log:"
  tail -n 40 "$PG_LLM_SERVER_LOG" >&2
fi
exit $rc
