#!/usr/bin/env bash
# ALTER EXTENSION pg_llm UPDATE from 0.1.0: a database created at 0.1.0
# (with a provider that has a secret header, a priced model, a budget and
# queue items) is updated, and its extension must then be the same as a
# fresh install: every function (arguments, result, body, settings,
# security, privileges, comment), table (columns, constraints, indexes,
# triggers, policies, privileges, comments) and view.  The old data must
# survive and work: the header value moves out of the readable options,
# old queue items are answered, calls go through, jobs work.  (The 0.2.0
# library refuses to work against 0.1.0 tables, so what needs the library,
# such as creating a job, is done after the update.)
source "$(dirname "$0")/lib.sh"
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'old'" "llm.worker_naptime = '200ms'"
start_mock
pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
q() { psql -X -Atq -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

createdb fresh
createdb old
q fresh "CREATE EXTENSION pg_llm"
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
out=$(q old "SELECT llm.chat('x', 'cheap')" 2>&1 || true)
check "a 0.1.0 install under the 0.2.0 library asks for the update" \
  $(grep -q 'ALTER EXTENSION pg_llm UPDATE' <<<"$out" && echo 1 || echo 0)

q old "ALTER EXTENSION pg_llm UPDATE" >/dev/null
check "ALTER EXTENSION pg_llm UPDATE goes to 0.2.0" \
  $([ "$(q old "SELECT extversion FROM pg_extension WHERE extname = 'pg_llm'")" = 0.2.0 ] && echo 1 || echo 0)

check "the rights granted on functions and views that changed are granted on the new ones" \
  $([ "$(q old "SELECT has_function_privilege('upgrade_analyst', 'llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text)', 'EXECUTE')
                 AND has_function_privilege('upgrade_analyst', 'llm.drop_job(text, boolean)', 'EXECUTE')
                 AND has_table_privilege('upgrade_analyst', 'llm.job_status', 'SELECT')
                 AND NOT has_function_privilege('upgrade_analyst', 'llm.create_job(text, regclass, text[], text, name, regclass, text, text, jsonb, boolean, text)', 'EXECUTE')")" = t ] && echo 1 || echo 0)
q old "REVOKE ALL ON FUNCTION llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text), llm.drop_job(text, boolean) FROM upgrade_analyst; REVOKE ALL ON llm.job_status FROM upgrade_analyst" >/dev/null

# the extension's objects, described; the generated functions and
# triggers of jobs are left out (the fresh database has no job)
describe() {
  q "$1" "
WITH f AS (
  SELECT p.oid, p.proname FROM pg_proc p
  WHERE p.pronamespace = 'llm'::regnamespace AND p.proname !~ '^_job_.+_(run|trigger|sink)\$')
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
check "the updated extension is the same as a fresh install ($(wc -l < "$SCRATCH/fresh.txt") objects and attributes compared)" $d

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

echo "upgrade: $pass passed, $fail failed"
[ $fail -eq 0 ]
