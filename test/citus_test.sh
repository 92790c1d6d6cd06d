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
# (llm.citus_calls = coordinator: the worker nodes could make them, see below)
export PGOPTIONS='-c llm.citus_calls=coordinator'
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
out=$(PGOPTIONS="$PGOPTIONS -c role=analyst" run -c "SELECT llm.chat(body, 'm') FROM tickets WHERE id = 9")
check "a role with the README's grants only" $([ "$out" = "echo: ticket 9" ] && echo 1 || echo 0)

sleep 1.5
out="coordinator: $(run -c "SELECT count(*) FROM llm.usage")"
out+=", workers: $(w1q -c "SELECT count(*) FROM llm.usage") $(w2q -c "SELECT count(*) FROM llm.usage")"
check "those calls ran on the coordinator (its llm.usage has them, the worker nodes' none)" \
  $([ "$(run -c "SELECT count(*) FROM llm.usage")" -ge 100 ] &&
    [ "$(w1q -c "SELECT count(*) FROM llm.usage")$(w2q -c "SELECT count(*) FROM llm.usage")" = 00 ] && echo 1 || echo 0)

# ---- what Citus cannot run: one clear error with the form that works ----
# worker nodes without the coordinator's configuration (as a node added
# since the last llm.citus_sync() would be)
w1q -c "DELETE FROM llm._setting WHERE key = 'citus_coordinator'" >/dev/null
w2q -c "DELETE FROM llm._setting WHERE key = 'citus_coordinator'" >/dev/null
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
    grep -q 'HINT:  Run SELECT llm.citus_sync() on the coordinator' <<<"$out" && echo 1 || echo 0)
out=$(run -c "SELECT run_command_on_shards('tickets', \$\$SELECT llm.enqueue(body, 'm') FROM %s LIMIT 1\$\$)")
check "an enqueue on a worker node's shard: one error that says so" \
  $(grep -q 'llm.enqueue cannot run on a Citus worker node' <<<"$out" &&
    ! grep -q 'distributed query from a query on a shard' <<<"$out" && echo 1 || echo 0)
check "and nothing was queued on the worker nodes" \
  $([ "$(w1q -c 'SELECT count(*) FROM llm.queue')$(w2q -c 'SELECT count(*) FROM llm.queue')" = 00 ] && echo 1 || echo 0)
cq -c "SELECT count(*) FROM llm.citus_sync()" >/dev/null

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
wait_for 30 "SELECT count(*) = 45 FROM llm.queue WHERE status = 'done'" || true
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
# a key column's name may hold any character but NUL (here U+0001)
cq -q >/dev/null <<'SQL'
CREATE TABLE odd (U&"k\0001" int PRIMARY KEY, body text, reply text);
SELECT create_distributed_table('odd', U&'k\0001');
INSERT INTO odd SELECT g, 'odd ' || g FROM generate_series(1, 20) g;
SQL
# (the key: the row without its other columns)
out=$(run -c "BEGIN" -c "SELECT count(llm.enqueue(body, 'm', target_table => 'odd', target_column => 'reply',
                                        target_key => to_jsonb(o) - 'body' - 'reply')) FROM odd o" -c "ROLLBACK")
out2=$(run -c "BEGIN" -c "SELECT count(llm.enqueue(body, 'm', target_table => 'odd', target_column => 'reply',
                                        target_key => CASE WHEN body = 'odd 9' THEN jsonb_build_object(U&'k\0001', -9)
                                                      ELSE to_jsonb(o) - 'body' - 'reply' END)) FROM odd o" -c "ROLLBACK")
check "a key column whose name holds a control character is looked up as any other" \
  $(grep -qx 20 <<<"$out" && grep -q 'ERROR:  target row {"k\\u0001": -9} of table public.odd does not exist' <<<"$out2" &&
    echo 1 || echo 0)
cq -qc "DROP TABLE odd"
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

# ---- the worker's write-back into Citus tables ----
# a session that holds locks (a transaction left open) until it is ended
hold() {  # name, SQL run in an open transaction
  cq -c "BEGIN" -c "$2" -c "SELECT pg_sleep(600) /* $1 */" >/dev/null 2>&1 &
  wait_for 20 "SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600) /* $1 */'" || true
}
holding() { [ "$(cq -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600) /* $1 */'")" = 1 ]; }
unhold() { cq -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600) /* $1 */'" >/dev/null; }
enqueue_rows() {  # model, condition
  cq -c "SELECT count(llm.enqueue(body, '$1', target_table => 'tickets', target_column => 'reply',
                                   target_key => jsonb_build_object('id', id))) FROM tickets WHERE $2" >/dev/null
}
cq -qc "UPDATE tickets SET reply = NULL WHERE reply IS NOT NULL"
mock_reset
# no write-back is put off for being held up (llm.writeback_timeout) here
cq -qc "ALTER SYSTEM SET llm.writeback_timeout = '10min'" -c "SELECT pg_reload_conf()" >/dev/null

# a user's multi-shard UPDATE left open locks every shard of the table for
# other multi-shard statements: the write-backs go shard by shard
hold multishard "UPDATE tickets SET body = body WHERE id > 2400" || true
enqueue_rows m "id <= 200"
wait_for 60 "SELECT count(*) = 200 FROM tickets WHERE id <= 200 AND reply = 'echo: ' || body" || true
out=$(run -c "SELECT count(*) FILTER (WHERE reply = 'echo: ' || body) FROM tickets WHERE id <= 200")
check "write-backs go to the shards their rows are in: a user's open multi-shard UPDATE of other rows holds none up" \
  $([ "$out" = 200 ] && holding multishard && echo 1 || echo 0)
unhold multishard
check "each of the 200 prompts sent once" $([ "$(mock_requests)" = 200 ] && [ "$(mock_most_per_prompt)" = 1 ] && echo 1 || echo 0)
out=$(run -c "SELECT count(*) FROM llm.queue WHERE target_table = 'tickets'::regclass AND status = 'done' AND answered AND reply LIKE 'echo: %'")
check "and every item is done with its reply kept" $([ "$out" -ge 200 ] && echo 1 || echo 0)

# kill -9 while a write-back waits for a row: the reply was saved before
# the write-back, so the crash writes it again and never asks again
mock_reset
hold rowlock "SELECT 1 FROM tickets WHERE id = 250 FOR UPDATE" || true
enqueue_rows m "id BETWEEN 201 AND 260 AND id <> 250"
wait_for 30 "SELECT count(*) = 59 FROM tickets WHERE id BETWEEN 201 AND 260 AND reply = 'echo: ' || body" || true
enqueue_rows m "id = 250"
wait_for 30 "SELECT count(*) = 1 FROM llm.queue WHERE target_key = '{\"id\": 250}' AND answered" || true
saved=$(run -c "SELECT count(*) FROM llm.queue WHERE target_key = '{\"id\": 250}' AND answered AND reply = 'echo: ticket 250'")
out="reply of row 250 saved while its write-back waits: $saved"
check "a reply whose write-back waits for a row lock is saved before it is written back" $([ "$saved" = 1 ] && echo 1 || echo 0)
wpid=$(run -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_llm worker' AND datname = 'postgres'" | head -1)
[ -z "$wpid" ] && wpid=$(run -c "SELECT pid FROM llm.workers WHERE kind = 'queue worker' LIMIT 1")
kill -9 "$wpid" || true
sleep 2
for i in $(seq 1 100); do cq -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
wait_for 60 "SELECT reply = 'echo: ticket 250' FROM tickets WHERE id = 250" || true
out="row 250: $(run -c "SELECT reply FROM tickets WHERE id = 250"); requests $(mock_requests), most per prompt $(mock_most_per_prompt)"
out+="; twice: $(curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print([k for k, n in json.load(sys.stdin)["by_key"].items() if n > 1])')"
check "after kill -9 (a crash restart) the row is written from the saved reply" \
  $([ "$(cq -c "SELECT reply FROM tickets WHERE id = 250")" = "echo: ticket 250" ] && echo 1 || echo 0)
check "and the provider was not asked again: each of the 60 prompts once" \
  $([ "$(mock_requests)" = 60 ] && [ "$(mock_most_per_prompt)" = 1 ] && echo 1 || echo 0)
cq -qc "ALTER SYSTEM RESET llm.writeback_timeout" -c "SELECT pg_reload_conf()" >/dev/null

# the server's synchronous_commit = off does not reach the worker's commits:
# an immediate stop after items are done loses none of them (items without
# a target here: a transaction that also writes to Citus worker nodes is
# flushed by Citus's commit anyway)
cq -qc "ALTER SYSTEM SET synchronous_commit = off" -c "ALTER SYSTEM SET wal_writer_delay = '10s'" \
   -c "ALTER SYSTEM SET wal_writer_flush_after = '1GB'" -c "SELECT pg_reload_conf()" >/dev/null
mock_reset
cq -c "SELECT count(llm.enqueue('sync ' || g, 'm')) FROM generate_series(1, 100) g" >/dev/null
cq -qc "CHECKPOINT"
# the last commits of a drain that just ended are the ones still in memory
wait_for 60 "SELECT count(*) = 100 FROM llm.queue WHERE prompt LIKE 'sync %' AND status = 'done'" || true
cq -c "SELECT substr(prompt, 6) FROM llm.queue WHERE prompt LIKE 'sync %' AND status = 'done' ORDER BY id" > "$SCRATCH/done_before"
as_pg pg_ctl -D "$CITUS_DIR_COORD/data" -m immediate stop >/dev/null
PGDATA_DIR="$CITUS_DIR_COORD/data" pg_ctl_start
for i in $(seq 1 100); do cq -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
lost=$(run -c "SELECT count(*) FROM unnest('{$(paste -sd, "$SCRATCH/done_before")}'::int[]) d(n)
              LEFT JOIN llm.queue q ON q.prompt = 'sync ' || d.n AND q.status = 'done' AND q.reply IS NOT NULL
              WHERE q.id IS NULL")
out="$(wc -l < "$SCRATCH/done_before") items done before the immediate stop, $lost of them lost"
check "synchronous_commit = off in the server: no item the worker finished is lost by an immediate stop" \
  $([ "$(wc -l < "$SCRATCH/done_before")" = 100 ] && [ "$lost" = 0 ] && echo 1 || echo 0)
wait_for 60 "SELECT count(*) = 100 FROM llm.queue WHERE prompt LIKE 'sync %' AND status = 'done'" || true
out=$(curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c '
import json, sys
done = set(l.strip() for l in open(sys.argv[1]) if l.strip())
by = json.load(sys.stdin)["by_key"]
print(sum(1 for k, n in by.items() if n > 1 and k.rsplit(" ", 1)[1] in done))' "$SCRATCH/done_before")
check "and none of the items finished before the stop was sent again" $([ "$out" = 0 ] && echo 1 || echo 0)
cq -qc "ALTER SYSTEM RESET synchronous_commit" -c "ALTER SYSTEM RESET wal_writer_delay" \
   -c "ALTER SYSTEM RESET wal_writer_flush_after" -c "SELECT pg_reload_conf()" >/dev/null

# ---- jobs over Citus tables ----
cq -q >/dev/null <<'SQL'
CREATE TABLE docs (id int PRIMARY KEY, body text, summary text);
SELECT create_distributed_table('docs', 'id');
INSERT INTO docs SELECT g, 'doc ' || g FROM generate_series(1, 50) g;
SQL
out=$(run -c "SELECT llm.create_job('dj', 'docs', '{id}', 'Summarize: {body}', result_column => 'summary', model => 'm')")
check "create_job with track_changes on a distributed table: refused up front, with the form that works" \
  $(grep -q 'ERROR:  track_changes cannot follow distributed table public.docs' <<<"$out" &&
    grep -q "HINT:  Create the job with track_changes => false and run llm.run_job('dj') on the coordinator" <<<"$out" &&
    [ "$(cq -c "SELECT count(*) FROM llm.job")" = 0 ] && echo 1 || echo 0)
out=$(run -c "SELECT llm.create_job('kj', 'kb', '{code}', 'Summarize: {body}', result_column => 'summary', model => 'm')")
check "and on a reference table" $(grep -q 'track_changes cannot follow reference table public.kb' <<<"$out" && echo 1 || echo 0)
mock_reset
out=$(run -c "SELECT llm.create_job('dj', 'docs', '{id}', 'Summarize: {body}', result_column => 'summary', model => 'm', track_changes => false)" \
          -c "SELECT llm.run_job('dj')")
check "track_changes => false and llm.run_job over a distributed table queue every row" \
  $([ "$(tail -1 <<<"$out")" = 50 ] && echo 1 || echo 0)
wait_for 60 "SELECT count(*) = 50 FROM docs WHERE summary = 'echo: Summarize: ' || body" || true
out="written: $(run -c "SELECT count(*) FROM docs WHERE summary = 'echo: Summarize: ' || body"); requests $(mock_requests)"
check "the job's replies are written into the distributed table, each prompt sent once" \
  $([ "$(run -c "SELECT count(*) FROM docs WHERE summary = 'echo: Summarize: ' || body")" = 50 ] &&
    [ "$(mock_requests)" = 50 ] && [ "$(mock_most_per_prompt)" = 1 ] && echo 1 || echo 0)
out=$(run -c "INSERT INTO docs VALUES (51, 'doc 51')" -c "SELECT llm.run_job('dj')")
check "run_job again queues only what is missing" $([ "$(tail -1 <<<"$out")" = 1 ] && echo 1 || echo 0)
out=$(run -c "SELECT llm.drop_job('dj')")
check "drop_job of a job on a distributed table" $([ "$(run -c "SELECT count(*) FROM llm.job")" = 0 ] && echo 1 || echo 0)

# a job made with track_changes on a local table that is then distributed
# (Citus copies the triggers onto the shards, with its unsafe triggers on)
cq -q >/dev/null <<'SQL'
CREATE TABLE notes (id int PRIMARY KEY, body text, summary text);
INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 5) g;
SELECT llm.create_job('nj', 'notes', '{id}', 'Summarize: {body}', result_column => 'summary', model => 'm');
CREATE TABLE notes2 (LIKE notes INCLUDING ALL);
SELECT llm.create_job('nj2', 'notes2', '{id}', 'Summarize: {body}', result_column => 'summary', model => 'm');
SQL
out=$(run -c "SET citus.enable_unsafe_triggers = on" -c "SELECT create_distributed_table('notes', 'id')")
check "distributing a table whose job tracks changes: the copy of its rows fires the trigger on a worker node, which says so" \
  $(grep -q 'ERROR:  trigger "llm_job_nj_insert_[0-9]*" of a pg_llm job cannot run on a Citus worker node' <<<"$out" && echo 1 || echo 0)
run -c "SET citus.enable_unsafe_triggers = on" -c "SELECT create_distributed_table('notes2', 'id')" >/dev/null
out=$(run -c "INSERT INTO notes2 VALUES (6, 'note 6')")
check "an empty table distributed so: a write fires the trigger on a worker node's shard, one error that says what to do" \
  $(grep -q 'of a pg_llm job cannot run on a Citus worker node' <<<"$out" &&
    grep -q 'HINT:  Drop the job on the coordinator with llm.drop_job()' <<<"$out" && echo 1 || echo 0)
out=$(run -c "SELECT llm.drop_job('nj2')" -c "SELECT llm.drop_job('nj')")
check "drop_job removes its triggers from the table and its shards without settings typed by hand" \
  $(! grep -q ERROR <<<"$out" &&
    [ "$(run -c "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'llm_job_nj%'")" = 0 ] &&
    [ "$(w1q -c "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'llm_job_nj%'")" = 0 ] &&
    [ "$(w2q -c "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'llm_job_nj%'")" = 0 ] && echo 1 || echo 0)
out=$(run -c "INSERT INTO notes2 VALUES (6, 'note 6')")
check "and the table takes writes again" $([ "$out" = "INSERT 0 1" ] && echo 1 || echo 0)

# ---- every node calls providers, under one budget ----
unset PGOPTIONS
out=$(w1q -c "SELECT p.name, p.has_api_key, m.name, m.input_usd_per_mtok FROM llm.provider p JOIN llm.model m ON m.provider = p.name WHERE m.name = 'm'")
check "the coordinator's providers, keys and models are on every worker node (sent when they changed)" \
  $([ "$out" = "mock|t|m|1" ] && [ "$(w2q -c "SELECT count(*) FROM llm._provider_secret WHERE api_key IS NOT NULL")" = 1 ] &&
    [ "$(run -c "SELECT count(*) FROM llm._citus_node WHERE preloaded")" = 2 ] && echo 1 || echo 0)
run -c "SELECT llm.add_model('m2', 'mock', 'gpt-4o-mini', input_usd_per_mtok => 3, output_usd_per_mtok => 4)" >/dev/null
out=$(run -c "BEGIN" -c "SELECT llm.add_model('never', 'mock')" -c "ROLLBACK")
check "a change is on every node when the admin function's transaction commits, and not when it rolls back" \
  $([ "$(w1q -c "SELECT input_usd_per_mtok FROM llm.model WHERE name = 'm2'")" = 3 ] &&
    [ "$(w2q -c "SELECT count(*) FROM llm.model WHERE name = 'never'")" = 0 ] && echo 1 || echo 0)
as_pg pg_ctl -D "$CITUS_DIR_W2/data" -m fast -w stop >/dev/null
out=$(run -c "SELECT llm.add_model('down', 'mock')")
check "a worker node that cannot take a change fails it, naming the node, and no node keeps it" \
  $(grep -q "ERROR:  pg_llm could not connect to Citus node 127.0.0.1:$CITUS_W2" <<<"$out" &&
    [ "$(run -c "SELECT count(*) FROM llm.model WHERE name = 'down'")" = 0 ] &&
    [ "$(w1q -c "SELECT count(*) FROM llm.model WHERE name = 'down'")" = 0 ] && echo 1 || echo 0)
PGDATA_DIR="$CITUS_DIR_W2/data" pg_ctl_start
for i in $(seq 1 50); do w2q -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
# a node that stops answering once it took a change, while the next one
# waits for a lock: the coordinator's statement, cancelled, ends at once
# (the nodes' transactions end with their connections; no ROLLBACK is
# waited for) and no node keeps the change.  Nodes are sent a change in
# the order of their names and ports.
if [ "$CITUS_W1" -lt "$CITUS_W2" ]; then first=$CITUS_W1 second=$CITUS_W2; else first=$CITUS_W2 second=$CITUS_W1; fi
citus_psql "$second" -c "BEGIN" -c "LOCK llm.model IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(600) /* lockhang */" >/dev/null 2>&1 &
for i in $(seq 1 50); do [ "$(citus_psql "$second" -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%lockhang%' AND pid <> pg_backend_pid()")" = 1 ] && break; sleep 0.1; done
hangout=$(mktemp)
timeout 90 psql -X -At -h 127.0.0.1 -p "$CITUS_COORD" -U postgres -d postgres \
  -c "SELECT llm.add_model('hang', 'mock')" >"$hangout" 2>&1 &
changer=$!
for i in $(seq 1 100); do [ "$(citus_psql "$second" -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_llm configuration'")" = 1 ] && break; sleep 0.1; done
hung=$(citus_psql "$first" -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_llm configuration'")
[ -n "$hung" ] && kill -STOP $hung
# the change is sent as the coordinator's transaction commits: a cancel
# (not statement_timeout, which ends before the commit) stops its wait
cq -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%add_model(''hang''%' AND pid <> pg_backend_pid()" >/dev/null
rc=0
wait "$changer" || rc=$?
[ -n "$hung" ] && kill -CONT $hung
citus_psql "$second" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%lockhang%' AND pid <> pg_backend_pid()" >/dev/null
out="exit $rc, first node's backend ${hung:-none}: $(cat "$hangout")"
rm -f "$hangout"
for i in $(seq 1 50); do [ "$(citus_psql "$first" -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_llm configuration'")" = 0 ] && break; sleep 0.1; done
check "a worker node that stops answering after taking a change does not hold the cancelled statement, and no node keeps the change" \
  $([ -n "$hung" ] && [ "$rc" != 124 ] && grep -q "canceling" <<<"$out" &&
    [ "$(run -c "SELECT count(*) FROM llm.model WHERE name = 'hang'")" = 0 ] &&
    [ "$(citus_psql "$first" -c "SELECT count(*) FROM llm.model WHERE name = 'hang'")" = 0 ] &&
    [ "$(citus_psql "$second" -c "SELECT count(*) FROM llm.model WHERE name = 'hang'")" = 0 ] && echo 1 || echo 0)

# keys: in no log, no catalog of Citus's, no statement text of a worker node
for p in "$CITUS_W1" "$CITUS_W2"; do
  citus_psql "$p" -qc "ALTER SYSTEM SET log_statement = 'all'" -c "ALTER SYSTEM SET log_min_duration_statement = 0" \
    -c "ALTER SYSTEM SET log_parameter_max_length = -1" -c "SELECT pg_reload_conf()" >/dev/null
done
secret=sk-citus-secret-4711
w1q -c "BEGIN" -c "LOCK llm.model IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(600) /* lockmodel */" >/dev/null 2>&1 &
for i in $(seq 1 50); do [ "$(w1q -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%lockmodel%' AND pid <> pg_backend_pid()")" = 1 ] && break; sleep 0.1; done
cq -c "SELECT llm.create_provider('vault', 'openai', 'http://127.0.0.1:9/v1', api_key => '$secret')" >/dev/null 2>&1 &
creator=$!
for i in $(seq 1 50); do [ "$(w1q -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_llm configuration'")" = 1 ] && break; sleep 0.1; done
activity=$(w1q -c "SELECT query FROM pg_stat_activity WHERE application_name = 'pg_llm configuration'")
w1q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%lockmodel%' AND pid <> pg_backend_pid()" >/dev/null
wait "$creator" || true
out="statement seen on the worker node: $activity"
check "the configuration travels as a parameter: the worker node's pg_stat_activity shows the statement, not the key" \
  $(grep -q 'llm._cluster_apply($1::jsonb, $2)' <<<"$activity" && ! grep -q "$secret" <<<"$activity" && echo 1 || echo 0)
leaks=0
for p in "$CITUS_COORD" "$CITUS_W1" "$CITUS_W2"; do
  for t in $(citus_psql "$p" -c "SELECT c.oid::regclass FROM pg_class c WHERE c.relname LIKE 'pg_dist%' AND c.relkind = 'r'"); do
    citus_psql "$p" -c "SELECT t::text FROM $t t" 2>/dev/null | grep -q "$secret" && leaks=$((leaks + 1))
  done
done
grep -l "$secret" "$CITUS_DIR_W1/server.log" "$CITUS_DIR_W2/server.log" >/dev/null && leaks=$((leaks + 100))
out="leaks: $leaks"
check "no key in the worker nodes' logs (log_statement = all, parameters logged) nor in any pg_dist_* catalog" \
  $([ "$leaks" = 0 ] && echo 1 || echo 0)
for p in "$CITUS_W1" "$CITUS_W2"; do
  citus_psql "$p" -qc "ALTER SYSTEM RESET log_statement" -c "ALTER SYSTEM RESET log_min_duration_statement" \
    -c "ALTER SYSTEM RESET log_parameter_max_length" -c "SELECT pg_reload_conf()" >/dev/null
done
sleep 0.5
check "and the key reached the worker nodes" \
  $([ "$(w1q -c "SELECT count(*) FROM llm._provider_secret WHERE api_key = '$secret'")" = 1 ] &&
    [ "$(w2q -c "SELECT count(*) FROM llm._provider_secret WHERE api_key = '$secret'")" = 1 ] && echo 1 || echo 0)
run -c "SELECT llm.drop_provider('vault')" >/dev/null

# calls Citus pushes down to the worker nodes run there
before_w=$(( $(w1q -c "SELECT count(*) FROM llm.usage") + $(w2q -c "SELECT count(*) FROM llm.usage") ))
before_c=$(run -c "SELECT count(*) FROM llm.usage")
mock_reset
out=$(run -c "SELECT count(llm.chat(body, 'm')) FROM tickets WHERE id <= 200")
sleep 1.5
after_w=$(( $(w1q -c "SELECT count(*) FROM llm.usage") + $(w2q -c "SELECT count(*) FROM llm.usage") ))
out="answered $out; worker nodes' usage rows +$((after_w - before_w)), coordinator's +$(( $(run -c "SELECT count(*) FROM llm.usage") - before_c ))"
check "SELECT llm.chat(body, 'm') FROM a distributed table: the calls run on the worker nodes, their usage recorded there" \
  $([ "$((after_w - before_w))" = 200 ] && [ "$(run -c "SELECT count(*) FROM llm.usage")" = "$before_c" ] &&
    [ "$(mock_requests)" = 200 ] && echo 1 || echo 0)
out=$(run -c "SELECT node, count(*) FROM llm.cluster_usage WHERE node <> (SELECT nodename || ':' || nodeport FROM pg_dist_node WHERE groupid = 0) GROUP BY 1 ORDER BY 1")
check "and visible in one place on the coordinator: llm.cluster_usage, by node" \
  $([ "$(wc -l <<<"$out")" = 2 ] && [ "$(awk -F'|' '{s += $2} END {print s}' <<<"$out")" = "$after_w" ] && echo 1 || echo 0)
out=$(run -c "SELECT string_agg(t, ',') FROM (SELECT run_command_on_shards('tickets', \$\$SELECT count(*) FROM llm.chat_many(ARRAY(SELECT body FROM %s WHERE id <= 200), 'm') WHERE error IS NULL\$\$)::text t) s")
check "llm.chat_many over each shard's own rows, on the worker nodes" \
  $([ "$(run -c "SELECT sum(result::int) FROM run_command_on_shards('tickets', \$\$SELECT count(*) FROM llm.chat_many(ARRAY(SELECT body FROM %s WHERE id <= 100), 'm') WHERE error IS NULL\$\$)")" = 100 ] && echo 1 || echo 0)
mock_reset
out=$(PGOPTIONS='-c llm.citus_calls=coordinator' run -c "SELECT count(llm.chat(body, 'm')) FROM tickets WHERE id <= 20")
check "SET llm.citus_calls = coordinator keeps them on the coordinator" \
  $([ "$out" = 20 ] && [ "$(mock_requests)" = 20 ] && echo 1 || echo 0)

# one budget: a role's calls on every node draw on its one budget, at the coordinator
# (a request sent again after a failure that may pass, such as a reset
# connection on a loaded machine, is a retry: no call of the budget's)
made=$(run -c "SELECT count(*) FROM llm.cluster_usage WHERE role = 'analyst' AND outcome <> 'retry'")
retries=$(run -c "SELECT count(*) FROM llm.cluster_usage WHERE role = 'analyst' AND outcome = 'retry'")
# calls sent: no retries, at least one attempt (a call the budget refused has none)
calls_sent() { run -c "SELECT count(*) FROM llm.cluster_usage WHERE role = 'analyst' AND outcome <> 'retry' AND attempts > 0"; }
sent_before=$(calls_sent)
run -c "SELECT llm.set_budget('analyst', NULL, $((made + 10)))" >/dev/null
mock_reset
out=$(PGOPTIONS='-c role=analyst' run -c "SELECT count(llm.chat(body, 'm')) FROM tickets WHERE id <= 40")
sent=$(mock_requests)
refused=$out
out=$(PGOPTIONS='-c role=analyst' run -c "SELECT count(llm.chat(body, 'm', options => '{\"on_error\": \"null\"}')) FROM tickets WHERE id <= 40")
later=$(mock_requests)
# (each node writes its usage rows a moment after its calls)
wait_for 10 "SELECT count(*) FILTER (WHERE outcome <> 'retry' AND attempts > 0) = $((sent_before + 10)) FROM llm.cluster_usage WHERE role = 'analyst'" || true
sleep 0.5
retried=$(($(run -c "SELECT count(*) FROM llm.cluster_usage WHERE role = 'analyst' AND outcome = 'retry'") - retries))
out="$refused (requests: $sent, of them retries: $retried)"
check "a budget of 10 more calls holds across the worker nodes: the statement fails with the budget's error, 10 calls sent" \
  $(grep -q 'ERROR:  monthly budget of role "analyst" is exhausted' <<<"$out" && [ "$sent" = $((10 + retried)) ] && echo 1 || echo 0)
out="requests: $later"
check "and later calls of the role, on any node, send nothing" $([ "$later" = "$sent" ] && echo 1 || echo 0)
# (a call in flight when another node's refusal ends the statement is
# booked as cancelled: it was sent)
n=$(calls_sent)
out="$n sent in all; by outcome: $(run -c "SELECT string_agg(outcome || ' ' || n, ', ' ORDER BY outcome) FROM (SELECT outcome, count(*) AS n FROM llm.cluster_usage WHERE role = 'analyst' GROUP BY 1) s")"
check "the role's usage, read across the nodes, has the 10 calls it sent, $((sent_before + 10)) in all" $([ "$n" = $((sent_before + 10)) ] && echo 1 || echo 0)
run -c "SELECT llm.set_budget('analyst', 0.0004)" >/dev/null
out=$(PGOPTIONS='-c role=analyst' run -c "SELECT count(llm.chat(body, 'm2', options => '{\"on_error\": \"null\", \"max_tokens\": 16}')) FROM tickets WHERE id <= 100")
sleep 1.5
spent=$(run -c "SELECT coalesce(sum(cost_usd), 0) FROM llm.cluster_usage WHERE role = 'analyst' AND model = 'm2'")
out="answered $out, spent $spent USD of 0.0004"
check "a budget in USD: the worker nodes' calls stop at it (what they spent, read across the nodes, is within it)" \
  $([ "$out" != "" ] && python3 -c "import sys; s=float('$spent'); sys.exit(0 if 0 < s <= 0.0004 else 1)" && echo 1 || echo 0)
run -c "SELECT llm.set_budget('analyst', NULL, NULL)" >/dev/null

# one rpm_limit: the worker nodes take their turns from the coordinator
run -c "SELECT llm.alter_provider('mock', options => '{\"rpm_limit\": 600}')" >/dev/null
mock_reset
out=$(run -c "SELECT count(llm.chat(body, 'm')) FROM tickets WHERE id <= 80")
out+=" $(curl -s "http://127.0.0.1:$MOCK_PORT/_arrivals" | python3 -c '
import json, sys
t = sorted(a["t_us"] for a in json.load(sys.stdin))
most = max(sum(1 for u in t if s <= u < s + 1000000) for s in t)
print(len(t), most, round((t[-1] - t[0]) / 1e6, 2))')"
read -r answered sent most span <<<"$out"
out="answered $answered, sent $sent, at most $most in a second, over $span s"
check "rpm_limit 600 across the worker nodes: 80 calls, never more than 21 in a second (10 a second and a burst of 10)" \
  $([ "$answered" = 80 ] && [ "$sent" = 80 ] && [ "$most" -le 21 ] && echo 1 || echo 0)
run -c "SELECT llm.alter_provider('mock', options => '{}')" >/dev/null

# ---- the extension's DDL on the cluster, and a node without the package ----
out=$(run -c "ALTER EXTENSION pg_llm UPDATE")
check "ALTER EXTENSION pg_llm UPDATE with the package on every node" $(! grep -q ERROR <<<"$out" && echo 1 || echo 0)
citus_bare_node w3
citus_psql "$CITUS_W3" -qc "CREATE EXTENSION citus" >/dev/null
out=$(run -c "SELECT citus_add_node('127.0.0.1', $CITUS_W3)")
check "citus_add_node of a node without pg_llm: refused first, naming the node, not Citus's missing control file" \
  $(grep -q "ERROR:  Citus node 127.0.0.1:$CITUS_W3 does not have pg_llm 0.3.0 installed" <<<"$out" &&
    grep -q 'HINT:  Install pg_llm 0.3.0 on that node' <<<"$out" &&
    [ "$(run -c "SELECT count(*) FROM pg_dist_node WHERE nodeport = $CITUS_W3")" = 0 ] && echo 1 || echo 0)
# a second database of the cluster, with the bare node among its workers
for p in "$CITUS_COORD" "$CITUS_W1" "$CITUS_W3"; do
  citus_psql "$p" -qc "CREATE DATABASE app2" >/dev/null
  psql -X -q -h 127.0.0.1 -p "$p" -U postgres -d app2 -c "CREATE EXTENSION citus" >/dev/null
done
app2() { psql -X -At -h 127.0.0.1 -p "$CITUS_COORD" -U postgres -d app2 "$@" 2>&1 || true; }
app2 -c "SELECT citus_set_coordinator_host('127.0.0.1', $CITUS_COORD)" \
     -c "SELECT citus_add_node('127.0.0.1', $CITUS_W1)" -c "SELECT citus_add_node('127.0.0.1', $CITUS_W3)" >/dev/null
out=$(app2 -c "CREATE EXTENSION pg_llm")
check "CREATE EXTENSION pg_llm with a worker node that lacks the package: one error naming it and both ways out" \
  $(grep -q "ERROR:  CREATE EXTENSION pg_llm needs pg_llm 0.3.0 on every Citus worker node: 127.0.0.1:$CITUS_W3 does not have it" <<<"$out" &&
    grep -q 'citus.enable_ddl_propagation = off' <<<"$out" && ! grep -q 'control file' <<<"$out" &&
    [ "$(app2 -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_llm'")" = 0 ] && echo 1 || echo 0)
out=$(app2 <<SQL
SET citus.enable_ddl_propagation = off;
CREATE EXTENSION pg_llm;
RESET citus.enable_ddl_propagation;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('m', 'mock', 'gpt-4o-mini');
CREATE TABLE t2 (id int PRIMARY KEY, body text);
SELECT create_distributed_table('t2', 'id');
INSERT INTO t2 SELECT g, 'row ' || g FROM generate_series(1, 6) g;
SELECT count(llm.chat(body, 'm')) FROM t2;
SQL
)
check "pg_llm on the coordinator alone (the other way out): calls over a distributed table run there" \
  $([ "$(tail -1 <<<"$out")" = 6 ] &&
    [ "$(psql -X -At -h 127.0.0.1 -p "$CITUS_W1" -U postgres -d app2 -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_llm'")" = 0 ] && echo 1 || echo 0)
out=$(app2 -c "ALTER EXTENSION pg_llm UPDATE")
check "ALTER EXTENSION of a pg_llm kept on the coordinator asks nothing of the nodes" $(! grep -q ERROR <<<"$out" && echo 1 || echo 0)
out=$(app2 -c "DROP EXTENSION pg_llm CASCADE")
check "and DROP EXTENSION removes it" \
  $([ "$(app2 -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_llm'")" = 0 ] && echo 1 || echo 0)
out=$(run -c "DROP EXTENSION pg_llm CASCADE")
check "DROP EXTENSION pg_llm on the coordinator drops it on every worker node" \
  $([ "$(run -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_llm'")" = 0 ] &&
    [ "$(w1q -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_llm'")" = 0 ] &&
    [ "$(w2q -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_llm'")" = 0 ] && echo 1 || echo 0)
out=$(run -c "SELECT citus_add_node('127.0.0.1', $CITUS_W3)")
check "without pg_llm in the database, the bare node is added" \
  $([ "$(run -c "SELECT count(*) FROM pg_dist_node WHERE nodeport = $CITUS_W3 AND isactive")" = 1 ] && echo 1 || echo 0)

echo "citus: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
