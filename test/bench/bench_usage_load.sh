#!/usr/bin/env bash
# Usage accounting under load: many sessions calling llm.chat as fast as
# they can (pgbench) against a provider that answers at once.  Every call
# the provider answered must leave its row in llm.usage: the script counts
# pgbench's calls against the rows written, and reports the records that
# had to wait for room in shared memory and those dropped (none may be).
#   bash test/bench/bench_usage_load.sh [--clients N] [--seconds S] [--buffer SLOTS]
source "$(dirname "$0")/../lib.sh"
clients=16
seconds=20
buffer=8192
while [ $# -gt 0 ]; do
  case $1 in
    --clients) clients=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --buffer) buffer=$2; shift 2 ;;
    *) echo "usage: $0 [--clients N] [--seconds S] [--buffer SLOTS]" >&2; exit 2 ;;
  esac
done
build_install
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'postgres'" \
  "llm.usage_buffer = $buffer" "max_connections = $((clients + 20))"
start_mock
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SQL
scratch_dir
echo "SELECT llm.chat('load', 'mock');" > "$SCRATCH/chat.sql"
log "pgbench: $clients clients for $seconds s"
out=$(pgbench -n -f "$SCRATCH/chat.sql" -c "$clients" -j 2 -T "$seconds" postgres 2>&1)
calls=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
t0=$(date +%s%N)
for i in $(seq 1 600); do
  [ "$(psql -X -Atq -c "SELECT pending FROM llm.usage_buffer_status()")" = 0 ] && break
  sleep 0.1
done
drain_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
sleep 0.5
read -r rows dropped waited <<<"$(psql -X -Atq -F ' ' -c \
  "SELECT (SELECT count(*) FROM llm.usage WHERE mode = 'sync'), dropped, waited FROM llm.usage_buffer_status()")"
first_last=$(psql -X -Atq -c "SELECT round(extract(epoch FROM max(ts) - min(ts))::numeric, 2) FROM llm.usage")
printf '\n| measure | value |\n|---|---|\n'
printf '| sessions calling llm.chat | %s |\n' "$clients"
printf '| calls answered (pgbench) | %s |\n' "$calls"
printf '| calls per second | %s |\n' "$tps"
printf '| usage rows written | %s |\n' "$rows"
printf '| records that waited for room | %s |\n' "$waited"
printf '| records dropped | %s |\n' "$dropped"
printf '| shared memory slots | %s |\n' "$buffer"
printf '| writer done after the last call | %s ms |\n' "$drain_ms"
printf '| calls span (first to last row) | %s s |\n' "$first_last"
[ "$rows" = "$calls" ] && [ "$dropped" = 0 ] && echo "every call has its usage row" ||
  { echo "MISSING: $((calls - rows)) calls without a usage row"; exit 1; }
