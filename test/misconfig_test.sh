#!/usr/bin/env bash
# Misconfiguration is said, not silent: without shared_preload_libraries a
# session's calls are warned about once (they cannot be recorded in
# llm.usage), and llm.enqueue refuses items no worker would ever send.
source "$(dirname "$0")/lib.sh"
start_postgres
start_mock
pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
                           options => '{"pass_through": true}');
SQL
out=$(psql -X -q 2>&1 <<SQL
SELECT llm.chat('one', 'mock');
SELECT llm.chat('two', 'mock');
SELECT llm.enqueue('three', 'mock');
SQL
)
check "a call that cannot be recorded in llm.usage is warned about" \
  $(grep -q 'WARNING:  calls of this session are not recorded in llm.usage: pg_llm is not in shared_preload_libraries' <<<"$out" && echo 1 || echo 0)
check "once a session" $([ "$(grep -c 'are not recorded in llm.usage' <<<"$out")" = 1 ] && echo 1 || echo 0)
check "the calls still answer" $([ "$(grep -c 'echo: ' <<<"$out")" = 2 ] && echo 1 || echo 0)
check "llm.enqueue refuses an item no worker would send, naming the settings" \
  $(grep -q 'ERROR:  no pg_llm worker can send queued items: pg_llm is not in shared_preload_libraries' <<<"$out" &&
    grep -q 'HINT:  Add pg_llm to shared_preload_libraries and this database to llm.database' <<<"$out" && echo 1 || echo 0)
check "and nothing was queued" $([ "$(psql -X -Atq -c 'SELECT count(*) FROM llm.queue')" = 0 ] && echo 1 || echo 0)
echo "misconfig: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
