#!/usr/bin/env bash
# pg_llm on a Citus 13 cluster (test/citus.sh: a coordinator and two
# worker nodes on loopback, each preloading citus and pg_llm, Citus built
# from the vendored source): calls and enqueue over distributed and
# reference tables from the coordinator in the README's plain forms, one
# clear error for what Citus would push down to a worker node, the
# queue's write-back into distributed and reference tables exactly once
# across kill -9, jobs, and the extension's DDL on the cluster.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/citus.sh"
start_mock
start_citus_cluster
pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else
    fail=$((fail + 1)); echo "not ok - $1"; head -c 600 <<<"${out:-}" | sed 's/^/#   /'; fi
}
# a command's output, errors included
run() { cq "$@" 2>&1 || true; }
mock_requests() { curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }
# the most requests the mock got for one prompt of the model
mock_most_per_prompt() {
  curl -s "http://127.0.0.1:$MOCK_PORT/_stats" |
    python3 -c 'import json,sys; v=json.load(sys.stdin)["by_key"].values(); print(max(v) if v else 0)'
}
mock_reset() { curl -s -X POST "http://127.0.0.1:$MOCK_PORT/_reset" >/dev/null; }
wait_for() {  # seconds, SQL that returns t when done
  local i
  for i in $(seq 1 $(($1 * 10))); do
    [ "$(cq -c "$2" 2>/dev/null)" = t ] && return 0
    sleep 0.1
  done
  return 1
}

# ---- setup: the extension on every node, a provider, tables ----
cq -q >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('m', 'mock', 'gpt-4o-mini', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
CREATE TABLE tickets (id int PRIMARY KEY, body text, reply text);
SELECT create_distributed_table('tickets', 'id');
INSERT INTO tickets SELECT g, 'ticket ' || g FROM generate_series(1, 40) g;
CREATE TABLE kb (code text PRIMARY KEY, body text, summary text);
SELECT create_reference_table('kb');
INSERT INTO kb SELECT 'k' || g, 'article ' || g FROM generate_series(1, 5) g;
CREATE ROLE analyst LOGIN;
GRANT USAGE ON SCHEMA llm TO analyst;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb),
    llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO analyst;
GRANT SELECT, UPDATE ON tickets, kb TO analyst;
SQL
check "CREATE EXTENSION pg_llm on the coordinator reaches every worker node" \
  $([ "$(w1q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_llm'")" = 0.3.0 ] &&
    [ "$(w2q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_llm'")" = 0.3.0 ] && echo 1 || echo 0)

# ---- calls over Citus tables, kept on the coordinator ----
out=$(run -c "SELECT string_agg(r, ',' ORDER BY id) FROM (SELECT id, llm.chat(body, 'm') AS r FROM tickets) s")
check "SELECT llm.chat(body) FROM a distributed table answers every row" \
  $([ "$(tr ',' '\n' <<<"$out" | grep -c '^echo: ticket ')" = 40 ] && echo 1 || echo 0)
out=$(run -c "SELECT id, llm.chat(body, 'm') FROM tickets ORDER BY id LIMIT 3")
check "the plain form, ordered and limited" \
  $([ "$out" = "$(printf '1|echo: ticket 1\n2|echo: ticket 2\n3|echo: ticket 3')" ] && echo 1 || echo 0)
out=$(run -c "SELECT llm.chat(body, 'm') FROM tickets WHERE id = 7")
check "a single-key filter (which Citus routes to one worker) answers on the coordinator" \
  $([ "$out" = "echo: ticket 7" ] && echo 1 || echo 0)
out=$(run -c "SELECT count(llm.chat(body, 'm')) FROM tickets WHERE id <= 10")
check "a call inside an aggregate (which Citus splits into the workers' partial aggregates)" \
  $([ "$out" = 10 ] && echo 1 || echo 0)
out=$(run -c "SELECT r FROM (SELECT id, llm.chat(body, 'm') AS r FROM tickets) s WHERE id = 3")
check "a call in a subquery" $([ "$out" = "echo: ticket 3" ] && echo 1 || echo 0)
out=$(run -c "SELECT count(*) FROM kb, llm.chat(kb.body, 'm') r WHERE r LIKE 'echo: article %'" 2>&1)
out2=$(run -c "SELECT string_agg(llm.chat(body, 'm'), ',' ORDER BY code) FROM kb")
check "a reference table" $([ "$(tr ',' '\n' <<<"$out2" | grep -c '^echo: article ')" = 5 ] && echo 1 || echo 0)
out=$(run -c "SELECT count(llm.chat(t.body || ' / ' || k.body, 'm')) FROM tickets t JOIN kb k ON k.code = 'k' || (t.id % 5 + 1)")
check "a join of a distributed and a reference table" $([ "$out" = 40 ] && echo 1 || echo 0)
out=$(PGOPTIONS='-c role=analyst' run -c "SELECT llm.chat(body, 'm') FROM tickets WHERE id = 9")
check "a role with the README's grants only" $([ "$out" = "echo: ticket 9" ] && echo 1 || echo 0)

# ---- what Citus cannot run: one clear error with the form that works ----
out=$(run -c "UPDATE tickets SET reply = llm.chat(body, 'm')")
check "UPDATE ... SET x = llm.chat(...) of a distributed table: our error, with the form that works" \
  $(grep -q 'ERROR:  llm.chat cannot be called in an UPDATE of distributed table tickets' <<<"$out" &&
    grep -q 'HINT:  Compute the replies first and update from them: WITH r AS MATERIALIZED' <<<"$out" &&
    ! grep -q 'must not be VOLATILE' <<<"$out" && echo 1 || echo 0)
out=$(run -c "WITH r AS MATERIALIZED (SELECT id, llm.chat(body, 'm') AS reply FROM tickets WHERE id <= 5)
              UPDATE tickets t SET reply = r.reply FROM r WHERE t.id = r.id")
check "the form the hint gives updates the rows" \
  $([ "$out" = "UPDATE 5" ] && [ "$(cq -c "SELECT count(*) FROM tickets WHERE reply = 'echo: ' || body")" = 5 ] && echo 1 || echo 0)
cq -qc "UPDATE tickets SET reply = NULL"
out=$(run -c "SELECT run_command_on_shards('tickets', \$\$SELECT llm.chat(body, 'm') FROM %s LIMIT 1\$\$)")
check "a call Citus runs on a worker node's shard: one error that says so, not 'no enabled provider'" \
  $(grep -q 'pg_llm cannot call providers from this Citus worker node' <<<"$out" &&
    ! grep -q 'no enabled provider' <<<"$out" && echo 1 || echo 0)
out=$(run -c "SELECT llm.chat(body, (SELECT 'm')) FROM tickets")
check "a query the coordinator cannot take apart (a subquery in the select list) gets the same error" \
  $(grep -q 'ERROR:  pg_llm cannot call providers from this Citus worker node' <<<"$out" &&
    grep -q 'HINT:  Run the statement on the coordinator' <<<"$out" && echo 1 || echo 0)
out=$(run -c "SELECT run_command_on_shards('tickets', \$\$SELECT llm.enqueue(body, 'm') FROM %s LIMIT 1\$\$)")
check "an enqueue on a worker node's shard: one error that says so" \
  $(grep -q 'llm.enqueue cannot run on a Citus worker node' <<<"$out" &&
    ! grep -q 'distributed query from a query on a shard' <<<"$out" && echo 1 || echo 0)
check "and nothing was queued on the worker nodes" \
  $([ "$(w1q -c 'SELECT count(*) FROM llm.queue')$(w2q -c 'SELECT count(*) FROM llm.queue')" = 00 ] && echo 1 || echo 0)

# ---- llm.enqueue over Citus tables, from the coordinator ----
mock_reset
out=$(run -c "SELECT count(llm.enqueue(body, 'm', target_table => 'tickets', target_column => 'reply',
                                        target_key => jsonb_build_object('id', id))) FROM tickets")
check "llm.enqueue(...) FROM a distributed table, the README's form, from the coordinator" \
  $([ "$out" = 40 ] && [ "$(cq -c "SELECT count(*) FROM llm.queue WHERE target_table = 'tickets'::regclass")" = 40 ] && echo 1 || echo 0)
check "the items are in the coordinator's queue, none in the workers'" \
  $([ "$(w1q -c 'SELECT count(*) FROM llm.queue')$(w2q -c 'SELECT count(*) FROM llm.queue')" = 00 ] && echo 1 || echo 0)
out=$(run -c "SELECT count(llm.enqueue(body, 'm', target_table => 'kb', target_column => 'summary',
                                        target_key => jsonb_build_object('code', code))) FROM kb")
check "and FROM a reference table" $([ "$out" = 5 ] && echo 1 || echo 0)
wait_for 30 "SELECT count(*) = 45 FROM llm.queue WHERE status = 'done'"
check "the worker drains them into the distributed and the reference table" \
  $([ "$(cq -c "SELECT count(*) FROM tickets WHERE reply = 'echo: ' || body")" = 40 ] &&
    [ "$(cq -c "SELECT count(*) FROM kb WHERE summary = 'echo: ' || body")" = 5 ] && echo 1 || echo 0)
check "each prompt sent once" $([ "$(mock_requests)" = 45 ] && [ "$(mock_most_per_prompt)" = 1 ] && echo 1 || echo 0)

# the keys are looked up a chunk at a time: a missing row is still the error
cq -qc "INSERT INTO tickets SELECT g, 'ticket ' || g FROM generate_series(41, 2500) g"
before=$(cq -c "SELECT count(*) FROM llm.queue")
out=$(run -c "SELECT count(llm.enqueue(body, 'm', target_table => 'tickets', target_column => 'reply',
                                        target_key => jsonb_build_object('id', CASE WHEN id = 1700 THEN -1 ELSE id END)))
              FROM tickets WHERE id > 40")
check "a key with no row among 2,460 (in the second chunk) fails the statement with the row's error" \
  $(grep -q 'ERROR:  target row {"id": -1} of table public.tickets does not exist' <<<"$out" &&
    [ "$(cq -c "SELECT count(*) FROM llm.queue")" = "$before" ] && echo 1 || echo 0)
out=$(run -c "SELECT count(llm.enqueue(body, 'm', target_table => 'tickets', target_column => 'reply',
                                        target_key => jsonb_build_object('id', CASE WHEN id = 2500 THEN -2 ELSE id END)))
              FROM tickets WHERE id > 40")
check "and in the last, partial chunk (checked when the statement ends)" \
  $(grep -q 'ERROR:  target row {"id": -2} of table public.tickets does not exist' <<<"$out" &&
    [ "$(cq -c "SELECT count(*) FROM llm.queue")" = "$before" ] && echo 1 || echo 0)
out=$(run -c "SELECT llm.enqueue('x', 'm', target_table => 'tickets', target_column => 'reply', target_key => '{\"id\": \"07\"}')")
check "a key given as text for an integer column is found (compared as the column's type)" \
  $([ -n "$out" ] && ! grep -q ERROR <<<"$out" && echo 1 || echo 0)
out=$(run <<'SQL'
DO $$
DECLARE n int := 0;
BEGIN
  FOR i IN 1..3 LOOP
    BEGIN
      PERFORM llm.enqueue('loop ' || i, 'm', target_table => 'tickets', target_column => 'reply',
                          target_key => jsonb_build_object('id', CASE WHEN i = 2 THEN -5 ELSE i END));
      n := n + 1;
    EXCEPTION WHEN no_data_found THEN
      RAISE NOTICE 'caught: %', SQLERRM;
    END;
  END LOOP;
  RAISE NOTICE 'queued %', n;
END $$;
SQL
)
check "in PL/pgSQL each statement's key is checked when it ends, and the error can be caught" \
  $(grep -q 'caught: target row {"id": -5} of table public.tickets does not exist' <<<"$out" &&
    grep -q 'queued 2' <<<"$out" && echo 1 || echo 0)
out=$(run <<'SQL'
BEGIN;
DECLARE c CURSOR FOR SELECT llm.enqueue(body, 'm', target_table => 'tickets', target_column => 'reply',
                                        target_key => jsonb_build_object('id', CASE WHEN id = 3 THEN -3 ELSE id END))
                     FROM tickets WHERE id <= 5;
FETCH 2 FROM c;
COMMIT;
SQL
)
check "a cursor left open is checked before its transaction commits" \
  $(grep -q 'target row {"id": -3} of table public.tickets does not exist' <<<"$out" && echo 1 || echo 0)
cq -qc "DELETE FROM llm.queue WHERE status = 'pending'"

echo "citus: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
