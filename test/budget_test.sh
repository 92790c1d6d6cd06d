#!/usr/bin/env bash
# Budgets under concurrency: several sessions and the queue worker call at
# once for one role; exactly the budgeted number of calls is made, the rest
# fail before they are sent (the mock counts what it receives).
source "$(dirname "$0")/lib.sh"
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" "llm.worker_naptime = '200ms'"
start_mock
psql -X -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SELECT llm.add_model('m', 'mock', 'mock?latency=20', input_usd_per_mtok => 1000, output_usd_per_mtok => 1000);
CREATE ROLE spender LOGIN;
CREATE ROLE payer LOGIN;
GRANT USAGE ON SCHEMA llm TO spender, payer;
GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb),
                          llm.enqueue(text, text, text, regclass, name, jsonb, jsonb, text, text, text) TO spender, payer;
SELECT llm.set_budget('spender', NULL, 25);
SQL
pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}

curl -s -X POST "http://127.0.0.1:$MOCK_PORT/_reset" >/dev/null
# three sessions of 20 calls each, and 20 queue items, against 25 allowed
calls_script='DO $$ BEGIN FOR i IN 1..20 LOOP BEGIN PERFORM llm.chat($q$x $q$ || i, $q$m$q$); RAISE NOTICE $q$ok$q$; EXCEPTION WHEN configuration_limit_exceeded THEN RAISE NOTICE $q$refused$q$; END; END LOOP; END $$;'
psql -X -q -U spender -c "SELECT count(llm.enqueue('q ' || g, 'm')) FROM generate_series(1, 20) g" >/dev/null
for s in 1 2 3; do
  psql -X -q -U spender -c "$calls_script" > "$SCRATCH/s$s.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
for i in $(seq 1 100); do
  left=$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')")
  [ "$left" = 0 ] && break
  sleep 0.1
done
ok=$(cat "$SCRATCH"/s*.log | grep -c 'NOTICE:  ok' || true)
refused=$(cat "$SCRATCH"/s*.log | grep -c 'NOTICE:  refused' || true)
done_items=$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status = 'done'")
failed_items=$(psql -X -Atq -c "SELECT count(*) FROM llm.queue WHERE status = 'failed' AND error LIKE 'monthly budget%'")
sent=$(curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
check "sessions and worker made exactly 25 calls together (sessions $ok, queue $done_items; the mock received $sent)" \
  $([ $((ok + done_items)) -eq 25 ] && [ "$sent" -eq 25 ] && echo 1 || echo 0)
check "the other 55 were refused before sending (sessions $refused, queue $failed_items)" \
  $([ $((refused + failed_items)) -eq 55 ] && echo 1 || echo 0)

# a dollar budget: at these prices a call costs about 0.005 USD and is
# estimated at 0.02 USD before it is sent (its max_tokens bounds the reply)
psql -X -q -c "SELECT llm.set_budget('payer', 0.1)" >/dev/null
dollar_script='DO $$ BEGIN FOR i IN 1..20 LOOP BEGIN PERFORM llm.chat($q$x $q$ || i, $q$m$q$, options => $q${"max_tokens": 5}$q$); RAISE NOTICE $q$ok$q$; EXCEPTION WHEN configuration_limit_exceeded THEN RAISE NOTICE $q$refused$q$; END; END LOOP; END $$;'
for s in 1 2; do
  psql -X -q -U payer -c "$dollar_script" > "$SCRATCH/d$s.log" 2>&1 &
  dpids+=($!)
done
wait "${dpids[@]}"
for i in $(seq 1 50); do
  [ "$(psql -X -Atq -c "SELECT pending FROM llm.usage_buffer_status()")" = 0 ] && break
  sleep 0.1
done
spent=$(psql -X -Atq -c "SELECT coalesce(sum(cost_usd), 0) FROM llm.usage WHERE role_oid = 'payer'::regrole")
ok=$(cat "$SCRATCH"/d*.log | grep -c 'NOTICE:  ok' || true)
refused=$(cat "$SCRATCH"/d*.log | grep -c 'NOTICE:  refused' || true)
check "two sessions stay within a 0.1 USD budget (spent $spent USD in $ok calls, $refused refused)" \
  $(python3 -c "print(1 if $spent <= 0.1 and $ok > 0 and $refused > 0 else 0)")

echo "budget: $pass passed, $fail failed"
[ $fail -eq 0 ]
