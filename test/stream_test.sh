#!/usr/bin/env bash
# Live streaming checks with a real libpq client: rows reach the client
# while the reply is generated (single-row mode and COPY TO STDOUT), a
# cancel stops the stream quickly, a client that goes away ends its
# backend, and a thousand streams cut off in every way leave the backend
# with no extra sockets.  Margins are generous: these are correctness
# checks, not timings.
source "$(dirname "$0")/lib.sh"
start_postgres "client_connection_check_interval = '100ms'"
start_mock
cc -O2 -Wall -I"$(pg_config --includedir)" -o "$PG_LLM_ROOT/test/stream_client" \
  "$PG_LLM_ROOT/test/stream_client.c" -L"$(pg_config --libdir)" -lpq
CLIENT="$PG_LLM_ROOT/test/stream_client"
psql -X -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('mock', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock', options => '{"pass_through": true}');
SELECT llm.create_provider('claude', 'anthropic', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock');
SELECT llm.add_model('drip-claude', 'claude', 'claude?chunk_delay=150');
SELECT llm.use_provider('mock');
SQL

pass=0
fail=0
check() {
  local name=$1 cond=$2
  if [ "$cond" = 1 ]; then pass=$((pass + 1)); echo "ok - $name"; else fail=$((fail + 1)); echo "not ok - $name"; fi
}

# Rows spread over the stream: the first arrives long before the last.
# $1: output of stream_client; prints "rows span_ms".
span() {
  awk '$2 != "ERROR" && $2 != "CANCEL" && $2 != "CLOSE" {n++; if (n == 1) f = $1; l = $1} END {printf "%d %d\n", n, (l - f) / 1000}' <<<"$1"
}
for proto in mock drip-claude; do
  model=$proto
  [ "$proto" = mock ] && model='mock?chunk_delay=150'
  out=$("$CLIENT" "SELECT llm.chat_stream('one two three four five six', '$model')")
  read -r n ms <<<"$(span "$out")"
  check "$proto: 7 rows arrive one by one over the stream (rows=$n, first to last ${ms} ms)" \
    $([ "$n" -eq 7 ] && [ "$ms" -ge 500 ] && echo 1 || echo 0)
done
out=$("$CLIENT" --copy "COPY (SELECT llm.chat_stream('one two three four five six', 'mock?chunk_delay=150')) TO STDOUT")
read -r n ms <<<"$(span "$out")"
check "COPY TO STDOUT streams (rows=$n, first to last ${ms} ms)" \
  $([ "$n" -eq 7 ] && [ "$ms" -ge 500 ] && echo 1 || echo 0)

# An error after some rows: the rows arrive, then the error.
out=$("$CLIENT" "SELECT llm.chat_stream('one two three four five six', 'mock?fault=truncate&chunk_delay=20')" || true)
rows=$(grep -cv ' ERROR ' <<<"$out" || true)
check "a truncated stream delivers its rows, then 08006 ($rows rows)" \
  $([ "$rows" -ge 3 ] && grep -q ' ERROR 08006 ' <<<"$out" && echo 1 || echo 0)

# Cancel: the error arrives soon after the cancel request.
out=$("$CLIENT" --cancel-after-ms 400 "SELECT llm.chat_stream('a b c d e f g h i j k l m n o p', 'mock?chunk_delay=200')" || true)
t_cancel=$(awk '$2 == "CANCEL" {print $1}' <<<"$out")
t_err=$(awk '$2 == "ERROR" {print $1}' <<<"$out")
ms=$(( (t_err - t_cancel) / 1000 ))
check "cancel stops the stream with 57014 (${ms} ms after the request)" \
  $(grep -q ' ERROR 57014 ' <<<"$out" && [ "$ms" -lt 1000 ] && echo 1 || echo 0)
out=$("$CLIENT" --cancel-after-ms 300 "SELECT llm.chat('x', 'mock?fault=hang')" || true)
t_cancel=$(awk '$2 == "CANCEL" {print $1}' <<<"$out")
t_err=$(awk '$2 == "ERROR" {print $1}' <<<"$out")
ms=$(( (t_err - t_cancel) / 1000 ))
check "cancel stops a hanging llm.chat with 57014 (${ms} ms after the request)" \
  $(grep -q ' ERROR 57014 ' <<<"$out" && [ "$ms" -lt 1000 ] && echo 1 || echo 0)

# A slow client: it stops reading for 2 s while a long reply (about 600 kB
# of rows) streams in; the backend neither spins nor loses rows.
"$CLIENT" --pause-ms 2000 "SELECT llm.chat_stream('x', 'mock?words=60000&chunk_delay=0')" > "$SCRATCH/slow.out" &
slow_pid=$!
sleep 1
cpu=$(psql -X -Atq -c "SELECT pid FROM pg_stat_activity WHERE query LIKE '%words=60000%' AND pid <> pg_backend_pid()" | head -1)
t1=$(awk '{print $14 + $15}' "/proc/$cpu/stat" 2>/dev/null || echo 0)
sleep 0.8
t2=$(awk '{print $14 + $15}' "/proc/$cpu/stat" 2>/dev/null || echo 0)
wait $slow_pid || true
rows=$(grep -cv ' ERROR ' "$SCRATCH/slow.out" || true)
check "a client that pauses gets every row (rows=$rows of 60000) and its backend waits without spinning (cpu ticks $((t2 - t1)) in 0.8 s)" \
  $([ "$rows" -eq 60000 ] && [ $((t2 - t1)) -lt 40 ] && echo 1 || echo 0)

# A client that goes away: its backend ends instead of streaming on.
"$CLIENT" --close-after-rows 2 "SELECT llm.chat_stream('a b c d e f g h i j k l m n o p q r s t', 'mock?chunk_delay=200')" >/dev/null
gone=0
for i in $(seq 1 30); do
  n=$(psql -X -Atq -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%a b c d e f g h i j%' AND pid <> pg_backend_pid()")
  if [ "$n" = 0 ]; then gone=1; break; fi
  sleep 0.1
done
check "a disconnected client's backend stops within 3 s" $gone

# A thousand streams cut off by LIMIT, errors and timeouts leave no sockets.
fds() { ls "/proc/$1/fd" | wc -l; }
# (notices off: this instance does not preload pg_llm, and its once-a-session
# warning about unrecorded usage would shift the lines read back)
coproc PSQL { PGOPTIONS='-c client_min_messages=error' psql -X -Atq 2>&1; }
echo "SELECT pg_backend_pid();" >&"${PSQL[1]}"
read -r pid <&"${PSQL[0]}"
echo "SELECT llm.chat('warm up', 'mock');" >&"${PSQL[1]}"
read -r _ <&"${PSQL[0]}"
before=$(fds "$pid")
cat >&"${PSQL[1]}" <<'SQL'
SELECT count(*) FROM generate_series(1, 700) g,
  LATERAL (SELECT llm.chat_stream('a b c d ' || g, 'mock') LIMIT 1) s;
DO $$
BEGIN
  FOR i IN 1..250 LOOP
    BEGIN
      PERFORM llm.chat_stream('one two three four', 'mock?fault=truncate');
    EXCEPTION WHEN connection_failure THEN NULL;
    END;
  END LOOP;
END $$;
SELECT 'errors done';
SET statement_timeout = '30ms';
SQL
read -r count <&"${PSQL[0]}"
read -r errs <&"${PSQL[0]}"
for i in $(seq 1 50); do
  echo "SELECT llm.chat_stream('a b c d e f', 'mock?chunk_delay=20');" >&"${PSQL[1]}"
done
echo "RESET statement_timeout; SELECT 'timeouts done';" >&"${PSQL[1]}"
while read -r line <&"${PSQL[0]}"; do
  [ "$line" = "timeouts done" ] && break
done
after=$(fds "$pid")
echo "\\q" >&"${PSQL[1]}"
check "1,000 streams cut off by LIMIT ($count), errors ($errs) and timeouts leave the backend's descriptors as they were ($before before, $after after)" \
  $([ "$count" = 700 ] && [ "$after" -le "$before" ] && echo 1 || echo 0)

echo "stream: $pass passed, $fail failed"
[ $fail -eq 0 ]
