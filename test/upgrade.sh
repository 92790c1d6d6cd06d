#!/usr/bin/env bash
# ALTER EXTENSION pg_llm UPDATE from every released version: a database
# created at 0.1.0 (with a provider that has a secret header, a priced
# model, a budget and queue items) and one created at 0.2.0 (with a job,
# granted functions and queued items) are updated, and each extension must
# then be the same as a fresh install: every function (arguments, result, body, settings,
# security, privileges, comment), table (columns, constraints, indexes,
# triggers, policies, privileges, comments) and view.  The old data must
# survive and work: the header value moves out of the readable options,
# old queue items are answered, calls go through, jobs work.  The old
# databases are made by the 0.2.0 library (built from the release's commit,
# tagged v0.2.0, into a scratch directory), so that a job made at 0.2.0, with its
# generated functions and trigger, goes through the update; then the
# server is restarted with the library of this tree.
source "$(dirname "$0")/lib.sh"
OLD_REF=7865b9f12d904515ba6c1712635e13f95bfab3c3   # v0.2.0
have_old_lib=0
if git -C "$PG_LLM_ROOT" rev-parse -q --verify "$OLD_REF^{commit}" >/dev/null; then
  scratch_dir
  log "building the pg_llm library of $OLD_REF"
  git -C "$PG_LLM_ROOT" archive "$OLD_REF" | tar -x -C "$SCRATCH"
  make -C "$SCRATCH" -s -j2 >/dev/null 2>&1 && make -C "$SCRATCH" -s install >/dev/null && have_old_lib=1
fi
# whatever happens, the library of this tree is the one left installed
trap 'make -C "$PG_LLM_ROOT" -s install >/dev/null 2>&1 || true; cleanup' EXIT
[ $have_old_lib = 1 ] || { log "$OLD_REF is not in this clone: the 0.2.0 databases are made by this tree's library"; make -C "$PG_LLM_ROOT" -s install >/dev/null; }
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'old, old2'" "llm.worker_naptime = '200ms'"
start_mock
pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
q() { psql -X -Atq -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

createdb old
q old "CREATE EXTENSION pg_llm VERSION '0.1.0'" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d old >/dev/null <<SQL
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
                           options => '{"headers": {"X-Team": "team-secret"}, "max_retries": 1}');
SELECT llm.add_model('cheap', 'mock', 'mock', input_usd_per_mtok => 0.1, output_usd_per_mtok => 0.2);
CREATE ROLE upgrade_analyst;
SELECT llm.set_budget('upgrade_analyst', 10, 100);
GRANT USAGE ON SCHEMA llm TO upgrade_analyst;
GRANT EXECUTE ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb),
                          llm.drop_job(text) TO upgrade_analyst;
GRANT SELECT ON llm.job_status TO upgrade_analyst;
CREATE TABLE reviews (id int PRIMARY KEY, body text, sentiment text);
INSERT INTO reviews VALUES (1, 'great'), (2, 'awful');
INSERT INTO llm.queue (prompt, model, target_table, target_column, target_key, enqueued_by)
VALUES ('left from 0.1.0', 'cheap', 'reviews', 'sentiment', '{"id": 2}',
        (SELECT oid FROM pg_roles WHERE rolname = current_user));
SQL
# from 0.2.0: a provider with a secret header, a priced model, a role with
# the documented grants, a job with its generated functions and trigger,
# items queued and one answered
createdb old2
q old2 "CREATE EXTENSION pg_llm VERSION '0.2.0'" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d old2 >/dev/null <<SQL
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
                           options => '{"headers": {"X-Team": "team-secret"}, "max_retries": 1}');
SELECT llm.add_model('cheap', 'mock', 'mock', input_usd_per_mtok => 0.1, output_usd_per_mtok => 0.2);
CREATE ROLE upgrade_analyst2;
SELECT llm.set_budget('upgrade_analyst2', 10, 100);
GRANT USAGE ON SCHEMA llm TO upgrade_analyst2;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb),
                          llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text),
                          llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text),
                          llm.run_job(text), llm.drop_job(text, boolean) TO upgrade_analyst2;
GRANT SELECT, INSERT, DELETE ON llm.job TO upgrade_analyst2;
GRANT SELECT ON llm.job_status, llm.usage TO upgrade_analyst2;
CREATE TABLE tickets (id int PRIMARY KEY, body text, label text);
INSERT INTO tickets VALUES (1, 'printer on fire'), (2, 'password reset'), (3, 'refund');
GRANT SELECT, UPDATE ON tickets TO upgrade_analyst2;
CREATE TABLE notes (id int PRIMARY KEY, body text, label text);
GRANT SELECT, INSERT, UPDATE, TRIGGER ON notes TO upgrade_analyst2;
CREATE SCHEMA mal2 AUTHORIZATION upgrade_analyst2;
CREATE TABLE ran (who name, what text);
GRANT INSERT ON ran TO PUBLIC;
SQL
if [ $have_old_lib = 1 ]; then
  # the jobs of 0.2.0: one run by llm.run_job, one with triggers, one
  # dropped with an item left; the owner of the first has made its
  # generated function SECURITY INVOKER with her schema first in its path
  # and planted a hashtext() there, for the next superuser who runs it
  psql -X -q -v ON_ERROR_STOP=1 -d old2 >/dev/null <<SQL
SET ROLE upgrade_analyst2;
SELECT llm.create_job('triage', 'tickets', '{id}', 'Triage: {body}', 'label', model => 'cheap', track_changes => false);
SELECT llm.create_job('notes', 'notes', '{id}', 'Label: {body}', 'label', model => 'cheap');
SELECT llm.create_job('gone', 'notes', '{id}', 'Gone: {body}', 'label', model => 'cheap', track_changes => false);
CREATE FUNCTION mal2.hashtext(text) RETURNS integer LANGUAGE plpgsql AS \$\$
BEGIN
    INSERT INTO public.ran VALUES (current_user, 'hashtext');
    BEGIN
        ALTER ROLE upgrade_analyst2 SUPERUSER;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    RETURN pg_catalog.hashtext(\$1);
END \$\$;
ALTER FUNCTION llm._job_triage_run() SECURITY INVOKER;
ALTER FUNCTION llm._job_triage_run() SET search_path = mal2, pg_catalog;
RESET ROLE;
INSERT INTO notes VALUES (1, 'from 0.2.0', NULL);
SELECT llm.enqueue('left by a dropped job', 'cheap');
UPDATE llm.queue SET job = 'gone', enqueued_by = 'upgrade_analyst2'::regrole WHERE prompt = 'left by a dropped job';
SET ROLE upgrade_analyst2;
SELECT llm.drop_job('gone');
SQL
fi

# the library of this tree from now on
as_pg pg_ctl -D "$PGDATA_DIR" -w stop >/dev/null
make -C "$PG_LLM_ROOT" -s install >/dev/null
as_pg pg_ctl -D "$PGDATA_DIR" -l "$PG_LLM_SERVER_LOG" -w start >/dev/null
createdb fresh
q fresh "CREATE EXTENSION pg_llm"

out=$(q old "SELECT llm.chat('x', 'cheap')" 2>&1 || true)
check "a 0.1.0 install under the new library asks for the update" \
  $(grep -q 'ALTER EXTENSION pg_llm UPDATE' <<<"$out" && echo 1 || echo 0)

q old "ALTER EXTENSION pg_llm UPDATE" >/dev/null
NEW=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$PG_LLM_ROOT/pg_llm.control")
check "ALTER EXTENSION pg_llm UPDATE goes from 0.1.0 to $NEW" \
  $([ "$(q old "SELECT extversion FROM pg_extension WHERE extname = 'pg_llm'")" = "$NEW" ] && echo 1 || echo 0)

# whether a role may execute every function of a name (whatever its
# arguments became) and select from a view
may() {
  q "$1" "SELECT bool_and(has_function_privilege('$2', p.oid, 'EXECUTE')) FROM pg_proc p
          WHERE p.pronamespace = 'llm'::regnamespace AND p.proname = '$3'"
}
check "the rights granted on functions and views that changed are granted on the new ones" \
  $([ "$(may old upgrade_analyst enqueue)$(may old upgrade_analyst drop_job)$(may old upgrade_analyst create_job)" = ttf ] &&
    [ "$(q old "SELECT has_table_privilege('upgrade_analyst', 'llm.job_status', 'SELECT')")" = t ] && echo 1 || echo 0)
q old "DO \$\$DECLARE f regprocedure; BEGIN
         FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE pronamespace = 'llm'::regnamespace
                  AND proname IN ('enqueue', 'drop_job') LOOP
           EXECUTE format('REVOKE ALL ON FUNCTION %s FROM upgrade_analyst', f);
         END LOOP;
       END\$\$; REVOKE ALL ON llm.job_status FROM upgrade_analyst" >/dev/null

# the extension's objects, described (no job of 0.2.0 may leave a function
# behind)
describe() {
  q "$1" "
WITH f AS (
  SELECT p.oid, p.proname FROM pg_proc p
  WHERE p.pronamespace = 'llm'::regnamespace)
SELECT * FROM (
  SELECT 'function ' || f.oid::regprocedure || ' (' || pg_get_function_arguments(f.oid) || ') returns '
         || pg_get_function_result(f.oid) || ' ' || md5(p.prosrc) || ' ' || p.provolatile::text || p.proparallel::text
         || ' definer=' || p.prosecdef || ' ' || coalesce(array_to_string(p.proconfig, ','), '-')
         || ' acl=' || coalesce(p.proacl::text, '-') || ' -- ' || coalesce(obj_description(f.oid, 'pg_proc'), '-')
  FROM f JOIN pg_proc p ON p.oid = f.oid
  UNION ALL
  SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
         || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
         || ' -- ' || coalesce(col_description(c.oid, a.attnum), '-')
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
  WHERE c.relnamespace = 'llm'::regnamespace AND c.relkind IN ('r', 'v')
  UNION ALL
  SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' rls=' || c.relrowsecurity
         || ' acl=' || coalesce(c.relacl::text, '-') || ' -- ' || coalesce(obj_description(c.oid, 'pg_class'), '-')
  FROM pg_class c WHERE c.relnamespace = 'llm'::regnamespace AND c.relkind IN ('r', 'v', 'S')
  UNION ALL
  SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'llm'::regnamespace
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
  WHERE c.relnamespace = 'llm'::regnamespace
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  WHERE c.relnamespace = 'llm'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT 'view ' || c.relname || ' ' || md5(pg_get_viewdef(c.oid)) FROM pg_class c
  WHERE c.relnamespace = 'llm'::regnamespace AND c.relkind = 'v'
  UNION ALL
  SELECT 'policy ' || tablename || ' ' || policyname || ' ' || cmd || ' ' || coalesce(qual, '') || ' ' || coalesce(with_check, '')
  FROM pg_policies WHERE schemaname = 'llm'
  UNION ALL
  SELECT 'dumped ' || x::regclass FROM pg_extension e, unnest(e.extconfig) x WHERE e.extname = 'pg_llm'
) d ORDER BY 1"
}
scratch_dir
describe fresh > "$SCRATCH/fresh.txt"
describe old > "$SCRATCH/updated.txt"
if diff -u "$SCRATCH/fresh.txt" "$SCRATCH/updated.txt" > "$SCRATCH/diff.txt"; then d=1; else d=0; cat "$SCRATCH/diff.txt"; fi
check "the extension updated from 0.1.0 is the same as a fresh install ($(wc -l < "$SCRATCH/fresh.txt") objects and attributes compared)" $d

check "the header value left the readable options" \
  $([ "$(q old "SELECT options::text || ' ' || headers::text FROM llm.provider WHERE name = 'mock'")" = '{"max_retries": 1} {X-Team}' ] && echo 1 || echo 0)
check "it is kept with the key" \
  $([ "$(q old "SELECT headers->>'X-Team' FROM llm._provider_secret WHERE provider = 'mock'")" = team-secret ] && echo 1 || echo 0)
check "calls go through after the update" \
  $([ "$(q old "SELECT llm.chat('x', 'cheap')")" = 'echo: x' ] && echo 1 || echo 0)
n=$(curl -s "http://127.0.0.1:$MOCK_PORT/_requests" | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["headers"].get("x-team") == "team-secret"))')
check "and still carry the secret header ($n requests)" $([ "$n" -ge 1 ] && echo 1 || echo 0)
for i in $(seq 1 100); do
  [ "$(q old "SELECT status FROM llm.queue WHERE prompt = 'left from 0.1.0'")" = done ] && break
  sleep 0.1
done
check "an item queued under 0.1.0 is answered after the update" \
  $([ "$(q old "SELECT sentiment FROM reviews WHERE id = 2")" = 'echo: left from 0.1.0' ] && echo 1 || echo 0)
q old "UPDATE reviews SET sentiment = NULL" >/dev/null
q old "SELECT llm.create_job('sentiment', 'reviews', '{id}', 'Classify: {body}', 'sentiment', model => 'cheap')" >/dev/null
check "a job queues its rows after the update" \
  $([ "$(q old "SELECT llm.run_job('sentiment')")" = 2 ] && echo 1 || echo 0)
for i in $(seq 1 100); do
  [ "$(q old "SELECT count(*) FROM reviews WHERE sentiment IS NOT NULL")" = 2 ] && break
  sleep 0.1
done
check "and the worker answers them" \
  $([ "$(q old "SELECT count(*) FROM reviews WHERE sentiment IS NOT NULL")" = 2 ] && echo 1 || echo 0)
check "the budget kept its limits" \
  $([ "$(q old "SELECT usd_per_month || '/' || calls_per_month || '/' || coalesce(max_queued::text, '-') FROM llm.budget")" = '10/100/-' ] && echo 1 || echo 0)

out=$(q old2 "SELECT llm.chat('x', 'cheap')" 2>&1 || true)
check "a 0.2.0 install under the new library asks for the update" \
  $(grep -q 'ALTER EXTENSION pg_llm UPDATE' <<<"$out" && echo 1 || echo 0)
q old2 "ALTER EXTENSION pg_llm UPDATE" >/dev/null
check "ALTER EXTENSION pg_llm UPDATE goes from 0.2.0 to $NEW" \
  $([ "$(q old2 "SELECT extversion FROM pg_extension WHERE extname = 'pg_llm'")" = "$NEW" ] && echo 1 || echo 0)
check "the rights granted at 0.2.0 are kept on every function of those names" \
  $([ "$(may old2 upgrade_analyst2 chat)$(may old2 upgrade_analyst2 enqueue)$(may old2 upgrade_analyst2 create_job)$(may old2 upgrade_analyst2 run_job)$(may old2 upgrade_analyst2 drop_job)$(may old2 upgrade_analyst2 set_budget)" = tttttf ] &&
    [ "$(q old2 "SELECT has_table_privilege('upgrade_analyst2', 'llm.job_status', 'SELECT') AND has_table_privilege('upgrade_analyst2', 'llm.usage', 'SELECT')")" = t ] && echo 1 || echo 0)
if [ $have_old_lib = 0 ]; then
  psql -X -q -v ON_ERROR_STOP=1 -d old2 -c "SET ROLE upgrade_analyst2" \
    -c "SELECT llm.create_job('triage', 'tickets', '{id}', 'Triage: {body}', 'label', model => 'cheap', track_changes => false)" >/dev/null
fi
if [ $have_old_lib = 1 ]; then
  check "the functions generated for the jobs of 0.2.0, owned by their owners, are gone" \
    $([ "$(q old2 "SELECT count(*) FROM pg_proc WHERE pronamespace = 'llm'::regnamespace AND proname ~ '^_job_.+_(run|trigger|sink)\$'")" = 0 ] && echo 1 || echo 0)
  check "the triggers of a 0.2.0 job call the extension's trigger function with the job's id" \
    $([ "$(q old2 "SELECT string_agg(t.tgname || ':' || (t.tgfoid = 'llm._job_trigger()'::regprocedure
                                          AND encode(t.tgargs, 'escape') = j.id || '\\000'), ',' ORDER BY t.tgname)
                   FROM pg_trigger t, llm.job j WHERE t.tgrelid = 'notes'::regclass AND j.name = 'notes'")" = 'llm_job_notes_insert:true,llm_job_notes_reset:true,llm_job_notes_update:true' ] && echo 1 || echo 0)
  check "the items of 0.2.0 jobs carry their job's id; a dropped job's item an id no job has" \
    $([ "$(q old2 "SELECT count(*) FILTER (WHERE q.job = 'notes' AND q.job_id = (SELECT id FROM llm.job WHERE name = 'notes'))
                          || '/' || count(*) FILTER (WHERE q.job = 'gone' AND q.job_id IS NOT NULL
                                                     AND q.job_id NOT IN (SELECT id FROM llm.job))
                          || '/' || count(*) FILTER (WHERE q.job IS NOT NULL AND q.job_id IS NULL)
                   FROM llm.queue q")" = 1/1/0 ] && echo 1 || echo 0)
  check "a superuser's run_job of the 0.2.0 job runs none of its owner's code" \
    $([ "$(q old2 "SELECT llm.run_job('triage')")" = 3 ] &&
      [ "$(q old2 "SELECT count(*) || '/' || (SELECT rolsuper FROM pg_roles WHERE rolname = 'upgrade_analyst2') FROM ran")" = 0/false ] && echo 1 || echo 0)
  q old2 "INSERT INTO notes VALUES (2, 'after the update', NULL)" >/dev/null
  for i in $(seq 1 100); do
    [ "$(q old2 "SELECT label FROM notes WHERE id = 2")" = 'echo: Label: after the update' ] && break
    sleep 0.1
  done
  check "the 0.2.0 job's trigger queues a new row for its owner, and it is answered" \
    $([ "$(q old2 "SELECT n.label || ' / ' || q.enqueued_by::regrole FROM notes n, llm.queue q
                   WHERE n.id = 2 AND q.target_key = '{\"id\": 2}' AND q.job = 'notes'")" = 'echo: Label: after the update / upgrade_analyst2' ] && echo 1 || echo 0)
else
  check "the job made at 0.2.0 queues its rows after the update" \
    $([ "$(psql -X -Atq -d old2 -c "SET ROLE upgrade_analyst2" -c "SELECT llm.run_job('triage')")" = 3 ] && echo 1 || echo 0)
fi
for i in $(seq 1 100); do
  [ "$(q old2 "SELECT count(*) FROM tickets WHERE label IS NOT NULL")" = 3 ] && break
  sleep 0.1
done
check "and the worker answers them into the table" \
  $([ "$(q old2 "SELECT count(*) FROM tickets WHERE label LIKE 'echo: Triage: %'")" = 3 ] && echo 1 || echo 0)
check "the secret header is still sent after the update" \
  $([ "$(q old2 "SELECT headers::text FROM llm.provider WHERE name = 'mock'")" = '{X-Team}' ] && echo 1 || echo 0)

# the rights granted to the test's role set aside, the extension is the
# same as a fresh install
q old2 "DO \$\$DECLARE f regprocedure; BEGIN
          FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE pronamespace = 'llm'::regnamespace LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM upgrade_analyst2', f);
          END LOOP;
        END\$\$; REVOKE ALL ON ALL TABLES IN SCHEMA llm FROM upgrade_analyst2" >/dev/null
describe old2 > "$SCRATCH/updated2.txt"
if diff -u "$SCRATCH/fresh.txt" "$SCRATCH/updated2.txt" > "$SCRATCH/diff2.txt"; then d=1; else d=0; cat "$SCRATCH/diff2.txt"; fi
check "the extension updated from 0.2.0 is the same as a fresh install" $d
echo "upgrade: $pass passed, $fail failed"
[ $fail -eq 0 ]
