#!/usr/bin/env bash
# Run the TAP tests (test/t/*.pl) with prove, as the postgres user: each
# test starts its own instance with the queue worker preloaded (through
# PostgreSQL::Test::Cluster from the server's PGXS) and its own mock
# provider on 127.0.0.1.  Builds nothing: install the extension first
# (make install).
#
# Usage: test/tap.sh [test files or names...]   (default: all of test/t)
#   PROVE_FLAGS   extra prove options (for example -v)
#   PG_LLM_KEEP=1 keep the scratch directory (logs, data directories)
# The last line is "tap: N passed, M failed" (assertions); the exit status
# is prove's.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

PGXS_TEST=$(dirname "$(pg_config --pgxs)")/../test
[ -f "$PGXS_TEST/perl/PostgreSQL/Test/Cluster.pm" ] ||
  { log "PostgreSQL::Test::Cluster is missing (postgresql-server-dev-15)"; exit 1; }
[ -x "$PGXS_TEST/regress/pg_regress" ] || { log "pg_regress is missing"; exit 1; }
perl -MIPC::Run -e 1 2>/dev/null || { log "IPC::Run is missing (libipc-run-perl)"; exit 1; }
command -v node >/dev/null || { log "node is missing (the mock provider needs it)"; exit 1; }
command -v prove >/dev/null || { log "prove is missing (perl)"; exit 1; }
[ -f "$(pg_config --pkglibdir)/pg_llm.so" ] ||
  { log "pg_llm is not installed: run make install first"; exit 1; }

# The tests and the mock are copied to a scratch directory the postgres
# user owns, so that a root-owned or unreadable checkout does not matter;
# prove runs there and PostgreSQL::Test::Utils puts tmp_check/ there.
scratch_dir
TAPDIR=$SCRATCH
mkdir -p "$TAPDIR/t" "$TAPDIR/mock"
cp "$PG_LLM_ROOT"/test/t/*.pl "$PG_LLM_ROOT"/test/t/*.pm "$TAPDIR/t/"
cp "$PG_LLM_ROOT"/test/mock/*.js "$TAPDIR/mock/"
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$TAPDIR"

tests=()
if [ $# -gt 0 ]; then
  for t in "$@"; do
    t=$(basename "$t" .pl)
    m=("$TAPDIR"/t/"$t"*.pl)   # a name or its prefix (001)
    [ -f "${m[0]}" ] || { log "no test $t in test/t"; exit 1; }
    tests+=("t/$(basename "${m[0]}")")
  done
else
  for t in "$TAPDIR"/t/*.pl; do tests+=("t/$(basename "$t")"); done
fi

log "running ${#tests[@]} TAP test files in $TAPDIR"
rc=0
# shellcheck disable=SC2086
(cd "$TAPDIR" && as_pg env \
  PERL5LIB="$PGXS_TEST/perl:$TAPDIR/t${PERL5LIB:+:$PERL5LIB}" \
  PG_REGRESS="$PGXS_TEST/regress/pg_regress" \
  TESTDIR="$TAPDIR" \
  TESTDATADIR="$TAPDIR/tmp_check" TESTLOGDIR="$TAPDIR/tmp_check/log" \
  PG_LLM_MOCK_JS="$TAPDIR/mock/server.js" \
  PGUSER=postgres \
  prove --timer ${PROVE_FLAGS:-} "${tests[@]}") || rc=$?

# count assertions from the per-test logs (TODO failures are not failures)
passed=0
failed=0
todo=0
TAP_LINE='^(\[[0-9:.]+\]\([0-9.]+s\) )?'
for f in "$TAPDIR"/tmp_check/log/regress_log_*; do
  [ -f "$f" ] || continue
  # lines look like "[05:12:37.461](5.284s) ok 1 - ..."
  p=$(grep -Ec "$TAP_LINE"'ok [0-9]+' "$f" || true)
  x=$(grep -Ec "$TAP_LINE"'not ok [0-9]+.*# TODO' "$f" || true)
  nf=$(grep -Ec "$TAP_LINE"'not ok [0-9]+' "$f" || true)
  passed=$((passed + p))
  todo=$((todo + x))
  failed=$((failed + nf - x))
done
if [ $rc -ne 0 ]; then
  [ $failed -gt 0 ] || failed=1   # a test that died or had a bad plan
  # shellcheck disable=SC2034  # read by cleanup() in lib.sh at exit
  PG_LLM_KEEP=1
  for f in "$TAPDIR"/tmp_check/log/regress_log_*; do
    [ -f "$f" ] || continue
    grep -E "$TAP_LINE"'not ok [0-9]+' "$f" | grep -vq '# TODO' || continue
    log "failures in $(basename "$f"):"
    { grep -E -A12 "$TAP_LINE"'not ok [0-9]+' "$f" | head -80 >&2; } || true
  done
  log "logs and data directories kept in $TAPDIR/tmp_check"
fi
[ $todo -eq 0 ] || log "$todo known failures marked TODO (see the test files)"
echo "tap: $passed passed, $failed failed"
exit $rc
