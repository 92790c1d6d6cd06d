#!/usr/bin/env bash
# make installcheck refuses where it could touch what is not its own, or
# could not run, and says why before anything runs:
#   - on an existing instance (REGRESS_INSTANCE=) that has a role or a
#     database named regress_llm_* (the suite creates and drops such
#     names): test/regress_guard.sh, and sql/setup.sql when pg_regress is
#     started without the guard; the role and the database are left as
#     they were, and no test database is made;
#   - as root, for the instance of its own (initdb cannot run as root).
# And the whole suite run on an instance that has roles of the names it
# used before they were prefixed (nobody, analyst, mallory, ...) leaves
# every role, membership and database of the instance as it found them.
# And make installcheck as it is meant to be run, by a user other than
# root (as postgres when this runs as root), in a copy of the tree: it
# passes on an instance of its own, with a mock provider of its own that
# is gone at the end.
source "$(dirname "$0")/lib.sh"
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'contrib_regression'" \
  "llm.worker_naptime = '500ms'" "llm.lease_time = '30s'"
start_mock
cd "$PG_LLM_ROOT"
scratch_dir
out_dir=$SCRATCH
pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
q() { psql -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }
regress() {
  make -s installcheck REGRESS="setup teardown" REGRESS_INSTANCE= \
    EXTRA_REGRESS_OPTS="--outputdir=$out_dir" "$@" 2>&1
}

q "CREATE ROLE regress_llm_someone LOGIN; COMMENT ON ROLE regress_llm_someone IS 'not the suite''s'"
out=$(regress) && rc=0 || rc=$?
check "a role named regress_llm_* stops make installcheck" $([ $rc -ne 0 ] && echo 1 || echo 0)
check "... saying which and why" \
  $(grep -q 'make installcheck: refusing to run: role regress_llm_someone already exist(s); the suite creates and drops roles and databases named regress_llm_\*' <<<"$out" && echo 1 || echo 0)
check "... before pg_regress made its database" $([ "$(q "SELECT count(*) FROM pg_database WHERE datname = 'contrib_regression'")" = 0 ] && echo 1 || echo 0)

# pg_regress run without the guard: setup refuses, the role stays as it was
out=$(regress REGRESS_PREP=) || true
check "without the guard, setup refuses" \
  $(grep -q "^refusing to run: regress_llm_someone exist(s) already" "$out_dir/results/setup.out" && echo 1 || echo 0)
check "... and installs nothing" $(! grep -q 'CREATE EXTENSION' "$out_dir/results/setup.out" && echo 1 || echo 0)
check "the role is left as it was" \
  $([ "$(q "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'regress_llm_someone'")" = "not the suite's" ] && echo 1 || echo 0)
q "DROP ROLE regress_llm_someone"

q "CREATE DATABASE regress_llm_theirs"
out=$(regress) && rc=0 || rc=$?
check "a database named regress_llm_* stops make installcheck too" \
  $([ $rc -ne 0 ] && grep -q 'refusing to run: database regress_llm_theirs already exist(s)' <<<"$out" && echo 1 || echo 0)
check "... and is left in place" $([ "$(q "SELECT count(*) FROM pg_database WHERE datname = 'regress_llm_theirs'")" = 1 ] && echo 1 || echo 0)
q "DROP DATABASE regress_llm_theirs"

# the instance's own roles and databases, as a user could have them
own_roles="alice analyst bob budgeted est_user hostile_victim job_other job_owner job_writer kc_alice kc_bob
  kc_carol limits_n limits_plain mallory nobody r_analyst r_lead sq_jobber sq_tenant transient"
for r in $own_roles; do q "CREATE ROLE $r; COMMENT ON ROLE $r IS 'a user''s $r'"; done
q "GRANT analyst TO bob"; q "CREATE DATABASE analytics OWNER analyst"
snapshot() {
  q "SELECT string_agg(format('%s %s %s %s %s', r.rolname, r.rolsuper, r.rolcanlogin, r.rolconnlimit,
                              shobj_description(r.oid, 'pg_authid')), E'\n' ORDER BY r.rolname) FROM pg_roles r"
  q "SELECT string_agg(format('%s in %s', m.roleid::regrole, m.member::regrole), E'\n' ORDER BY 1) FROM pg_auth_members m"
  q "SELECT string_agg(format('%s %s', datname, datdba::regrole), E'\n' ORDER BY datname) FROM pg_database"
}
before=$(snapshot)
out=$(make -s installcheck REGRESS_INSTANCE= EXTRA_REGRESS_OPTS="--outputdir=$out_dir" 2>&1) && rc=0 || rc=$?
check "the whole suite passes on an instance with roles of its old names" $([ $rc -eq 0 ] && echo 1 || echo 0)
[ $rc -eq 0 ] || { tail -5 <<<"$out"; head -c 5000 "$out_dir/regression.diffs" 2>/dev/null; }
after=$(snapshot)
check "... and leaves its roles, memberships and databases as they were (but its own test database)" \
  $([ "$(grep -v '^contrib_regression ' <<<"$before")" = "$(grep -v '^contrib_regression ' <<<"$after")" ] && echo 1 || echo 0)
[ "$(grep -v '^contrib_regression ' <<<"$before")" = "$(grep -v '^contrib_regression ' <<<"$after")" ] ||
  diff <(echo "$before") <(echo "$after") || true

if [ "$(id -u)" -eq 0 ]; then
  out=$(make -s installcheck REGRESS=setup EXTRA_REGRESS_OPTS="--outputdir=$out_dir" 2>&1) && rc=0 || rc=$?
  check "as root, the instance of its own is refused at once, naming the way that works" \
    $([ $rc -ne 0 ] && grep -q 'make installcheck: initdb cannot be run as root; run it as another user, or run bash test/regress.sh' <<<"$out" &&
      [ ! -d "$PG_LLM_ROOT/tmp_check" ] && echo 1 || echo 0)
fi

scratch_dir
copy=$SCRATCH
tar -C "$PG_LLM_ROOT" --exclude=.git --exclude=./results --exclude=./tmp_check --exclude=./.build \
  --exclude='*.o' --exclude=node_modules -cf - . | tar -C "$copy" -xf -
if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$copy"; fi
out=$(cd "$copy" && as_pg env -u MOCK_PORT -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PG_LLM_SERVER_LOG \
  HOME="$copy" make -s installcheck 2>&1) && rc=0 || rc=$?
check "make installcheck passes on an instance of its own" \
  $([ $rc -eq 0 ] && grep -q 'All [0-9]* tests passed' <<<"$out" && grep -q 'creating temporary instance' <<<"$out" && echo 1 || echo 0)
[ $rc -eq 0 ] || { tail -30 <<<"$out"; head -c 5000 "$copy/regression.diffs" 2>/dev/null; }
mock_left=0
for p in $(pgrep -f -- '--port-file results/mock/port' || true); do
  [ "$(readlink "/proc/$p/cwd")" = "$copy" ] && mock_left=1
done
check "... with a mock provider it started and stopped" \
  $([ -f "$copy/results/mock/mock.log" ] && [ ! -e "$copy/results/mock/port.pid" ] && [ $mock_left = 0 ] && echo 1 || echo 0)

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
