#!/usr/bin/env bash
# pg_llm on a Citus cluster (test/citus.sh: a coordinator and two worker
# nodes on loopback, Citus built from the vendored source), the
# coordinator-only forms and the every-node forms side by side, in one
# run, median of --rounds interleaved rounds:
#
#   - SELECT count(llm.chat(body, m)) FROM a distributed table of --rows
#     rows at --latency ms a call: kept on the coordinator
#     (llm.citus_calls = coordinator) and pushed down to the worker nodes
#     (auto); chat_many of the same rows on the coordinator, and over each
#     shard's rows on the worker nodes (run_command_on_shards);
#   - llm.enqueue of --items rows of a distributed table against the same
#     rows of a local table;
#   - the worker draining --items items into the distributed table against
#     the local table (zero latency);
#   - the margins: a budget of 10 calls and rpm_limit 600 held by calls
#     on the worker nodes (requests the mock received).
#
#   bash test/bench/bench_citus.sh [--rows 200] [--latency 50] [--items 2000] [--rounds 3]
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/../citus.sh"

rows=200
latency=50
items=2000
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; shift 2 ;;
    --latency) latency=$2; shift 2 ;;
    --items) items=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

ensure_packages
build_install
start_mock
start_citus_cluster
cq -q >/dev/null <<SQL
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('slow', 'mock', 'gpt-4o-mini?latency=$latency', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
SELECT llm.add_model('fast', 'mock', 'gpt-4o-mini', input_usd_per_mtok => 1, output_usd_per_mtok => 2);
CREATE TABLE t (id int PRIMARY KEY, body text, reply text);
SELECT create_distributed_table('t', 'id');
INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, greatest($rows, $items)) g;
CREATE TABLE tl (id int PRIMARY KEY, body text, reply text);
INSERT INTO tl SELECT g, 'row ' || g FROM generate_series(1, greatest($rows, $items)) g;
SQL
mock_reset() { curl -s -X POST "http://127.0.0.1:$MOCK_PORT/_reset" >/dev/null; }
mock_requests() { curl -s "http://127.0.0.1:$MOCK_PORT/_stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

# seconds a statement takes (its client's wall clock), and its output checked
timed() {  # expected-output, psql arguments...
  local want=$1 t0 t1 out
  shift
  t0=$(date +%s%N)
  out=$(cq "$@" 2>&1)
  t1=$(date +%s%N)
  [ "$out" = "$want" ] || { log "unexpected output: $out (wanted $want)"; exit 1; }
  python3 -c "print(($t1 - $t0) / 1e9)"
}
# seconds from the first item's enqueue to the last one's finish
drain() {  # table
  local t0 t1
  cq -qc "UPDATE $1 SET reply = NULL" -c "TRUNCATE llm.queue" >/dev/null
  t0=$(date +%s%N)
  cq -c "SELECT count(llm.enqueue(body, 'fast', target_table => '$1', target_column => 'reply',
                                  target_key => jsonb_build_object('id', id))) FROM $1 WHERE id <= $items" >/dev/null
  for i in $(seq 1 1200); do
    [ "$(cq -c "SELECT count(*) FROM llm.queue WHERE status IN ('pending', 'running')")" = 0 ] && break
    sleep 0.1
  done
  t1=$(date +%s%N)
  [ "$(cq -c "SELECT count(*) FROM $1 WHERE reply = 'echo: ' || body")" = "$items" ] ||
    { log "the drain into $1 did not write every row"; exit 1; }
  python3 -c "print(($t1 - $t0) / 1e9)"
}
enqueue_time() {  # table
  cq -c "TRUNCATE llm.queue" >/dev/null
  timed "$items" -c "SELECT count(llm.enqueue(body, 'fast', target_table => '$1', target_column => 'reply',
                                              target_key => jsonb_build_object('id', id), if_queued => 'add'))
                     FROM $1 WHERE id <= $items"
}

declare -A res
for r in $(seq 1 "$rounds"); do
  log "round $r of $rounds"
  res[coord]+="$(PGOPTIONS='-c llm.citus_calls=coordinator' timed "$rows" -c "SELECT count(llm.chat(body, 'slow')) FROM t WHERE id <= $rows") "
  res[nodes]+="$(timed "$rows" -c "SELECT count(llm.chat(body, 'slow')) FROM t WHERE id <= $rows") "
  res[many_coord]+="$(timed "$rows" -c "SELECT count(*) FROM llm.chat_many(ARRAY(SELECT body FROM t WHERE id <= $rows), 'slow') WHERE error IS NULL") "
  res[many_nodes]+="$(timed "$rows" -c "SELECT sum(result::int) FROM run_command_on_shards('t', \$\$SELECT count(*) FROM llm.chat_many(ARRAY(SELECT body FROM %s WHERE id <= $rows), 'slow') WHERE error IS NULL\$\$)") "
  res[enq_dist]+="$(enqueue_time t) "
  res[enq_local]+="$(enqueue_time tl) "
  res[drain_dist]+="$(drain t) "
  res[drain_local]+="$(drain tl) "
done
cq -c "TRUNCATE llm.queue" >/dev/null

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
for k in "${!res[@]}"; do res[$k]=$(median "${res[$k]}"); done

# the margins, on the worker nodes
cq -qc "CREATE ROLE bench LOGIN" -c "GRANT USAGE ON SCHEMA llm TO bench" \
   -c "GRANT EXECUTE ON FUNCTION llm.chat(text, text, text, jsonb) TO bench" -c "GRANT SELECT ON t TO bench" \
   -c "SELECT llm.set_budget('bench', NULL, 10)" >/dev/null
mock_reset
PGOPTIONS='-c role=bench' cq -c "SELECT count(llm.chat(body, 'fast', options => '{\"on_error\": \"null\"}')) FROM t WHERE id <= 100" >/dev/null 2>&1 || true
budget_sent=$(mock_requests)
cq -qc "SELECT llm.alter_provider('mock', options => '{\"rpm_limit\": 600}')" >/dev/null
mock_reset
cq -c "SELECT count(llm.chat(body, 'fast')) FROM t WHERE id <= 100" >/dev/null
read -r rpm_sent rpm_most rpm_span <<<"$(curl -s "http://127.0.0.1:$MOCK_PORT/_arrivals" | python3 -c '
import json, sys
t = sorted(a["t_us"] for a in json.load(sys.stdin))
print(len(t), max(sum(1 for u in t if s <= u < s + 1000000) for s in t), round((t[-1] - t[0]) / 1e6, 2))')"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
rate() { python3 -c "print(f'{$1 / $2:,.0f}')"; }
echo
echo "pg_llm on Citus 13: a coordinator and two worker nodes on one machine, median of $rounds rounds"
echo
printf '| %-62s | %10s | %10s | %s |\n' "case" "seconds" "calls/s" "against the coordinator-only form"
printf '|%s|%s|%s|%s|\n' "----------------------------------------------------------------" "------------" "------------" "------------------------------------"
printf '| %-62s | %10.3f | %10s | %s |\n' "llm.chat over $rows rows at $latency ms, on the coordinator" "${res[coord]}" "$(rate "$rows" "${res[coord]}")" "1.00"
printf '| %-62s | %10.3f | %10s | %s times as fast |\n' "llm.chat over $rows rows at $latency ms, on the worker nodes" "${res[nodes]}" "$(rate "$rows" "${res[nodes]}")" "$(ratio "${res[coord]}" "${res[nodes]}")"
printf '| %-62s | %10.3f | %10s | %s times as fast |\n' "llm.chat_many of the $rows rows, on the coordinator" "${res[many_coord]}" "$(rate "$rows" "${res[many_coord]}")" "$(ratio "${res[coord]}" "${res[many_coord]}")"
printf '| %-62s | %10.3f | %10s | %s times as fast |\n' "llm.chat_many over each shard's rows, on the worker nodes" "${res[many_nodes]}" "$(rate "$rows" "${res[many_nodes]}")" "$(ratio "${res[coord]}" "${res[many_nodes]}")"
echo
printf '| %-62s | %10s | %10s | %s |\n' "queue" "seconds" "items/s" "against a local table"
printf '|%s|%s|%s|%s|\n' "----------------------------------------------------------------" "------------" "------------" "------------------------------------"
printf '| %-62s | %10.3f | %10s | %s |\n' "llm.enqueue of $items rows of a local table" "${res[enq_local]}" "$(rate "$items" "${res[enq_local]}")" "1.00"
printf '| %-62s | %10.3f | %10s | %s |\n' "llm.enqueue of $items rows of a distributed table" "${res[enq_dist]}" "$(rate "$items" "${res[enq_dist]}")" "$(ratio "${res[enq_local]}" "${res[enq_dist]}")"
printf '| %-62s | %10.3f | %10s | %s |\n' "the worker draining $items items into a local table" "${res[drain_local]}" "$(rate "$items" "${res[drain_local]}")" "1.00"
printf '| %-62s | %10.3f | %10s | %s |\n' "the worker draining $items items into a distributed table" "${res[drain_dist]}" "$(rate "$items" "${res[drain_dist]}")" "$(ratio "${res[drain_local]}" "${res[drain_dist]}")"
echo
echo "Margins of the calls made on the worker nodes:"
echo "- a budget of 10 calls, 100 rows asked for: the mock received $budget_sent requests (margin $((budget_sent - 10)))"
echo "- rpm_limit 600 (10 a second, a burst of 10): 100 calls, $rpm_sent requests, at most $rpm_most in any second, over $rpm_span s"
