#!/usr/bin/env bash
# A provider whose host name does not resolve.  The script runs itself in
# a network namespace of its own (unshare -n) with only the loopback
# interface up, so the name lookup fails on this machine and no packet
# leaves it; PostgreSQL and the mock provider run inside on 127.0.0.1.
# Checks: a clear 08006 error naming the lookup failure after the retries,
# the fallback route serving the call, and a stream failing the same way.
if [ "${PG_LLM_IN_NETNS:-0}" != 1 ]; then
  command -v unshare >/dev/null || { echo "unknown_host: 0 passed, 1 failed (unshare is missing)"; exit 1; }
  exec unshare -n env PG_LLM_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
source "$(dirname "$0")/lib.sh"
start_postgres
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SELECT llm.create_provider('nowhere', 'openai', 'http://no-such-host.invalid/v1', api_key => 'sk-x',
                           options => '{"max_retries": 1}');
SELECT llm.add_model('lost', 'nowhere', 'm');
SELECT llm.add_model('rescued', 'nowhere', 'm');
SELECT llm.add_model('rescued', 'mock', 'mock', priority => 200);
SELECT llm.use_provider('mock');
-- this instance does not preload pg_llm: its warning about unrecorded
-- usage is not what this test reads
ALTER DATABASE postgres SET client_min_messages = error;
SQL

pass=0
fail=0
check() {
  if [ "$2" = 1 ]; then pass=$((pass + 1)); echo "ok - $1"; else fail=$((fail + 1)); echo "not ok - $1"; fi
}

t0=$(date +%s%N)
out=$(psql -X -q -v VERBOSITY=verbose -c "SELECT llm.chat('x', 'lost')" 2>&1 || true)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "$out" | sed 's/^/    /'
check "an unresolvable host is a connection error, 08006 ($ms ms, with one retry)" \
  $(grep -q 'ERROR:  08006: could not reach provider "nowhere"' <<<"$out" && echo 1 || echo 0)
check "its detail says the name did not resolve" \
  $(grep -q 'Could not resolve host: no-such-host.invalid' <<<"$out" && echo 1 || echo 0)
check "and that it tried twice" $(grep -q 'Gave up after 2 attempts' <<<"$out" && echo 1 || echo 0)

out=$(psql -X -Atq -c "SELECT llm.chat('x', 'rescued')" 2>&1 || true)
check "the fallback route serves a model whose first provider does not resolve ($out)" \
  $([ "$out" = "echo: x" ] && echo 1 || echo 0)

out=$(psql -X -q -c "SELECT llm.chat_stream('x', 'lost')" 2>&1 || true)
check "a stream to it fails the same way, before any row" \
  $(grep -q 'could not reach provider "nowhere"' <<<"$out" && echo 1 || echo 0)

echo "unknown_host: $pass passed, $fail failed"
[ $fail -eq 0 ]
