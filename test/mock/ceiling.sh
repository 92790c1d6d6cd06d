#!/usr/bin/env bash
# test/mock/ceiling.sh: measures the mock provider's own ceiling, so a
# benchmark can tell whether the mock (and not pg_llm) was the bottleneck.
# Starts a mock on a free loopback port, drives it with test/mock/load.js
# (keep-alive connections, closed loop, tiny non-streaming OpenAI requests)
# and prints a table of requests/s.  Every run is bounded by a request count
# and by MAX_SECONDS; the mock is stopped by its PID at exit.
#
# Environment knobs (defaults in brackets):
#   REQUESTS [20000]      requests per run
#   CONCS ["1 50"]        concurrencies to measure
#   LAT_REQUESTS [5000]   requests of the latency=50 run (at ~1000/s)
#   MAX_SECONDS [60]      time limit of each run
#   CLIENTS ["raw http"]  load.js clients: raw sockets, and http.Agent
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
NODE=${NODE:-node}
REQUESTS=${REQUESTS:-20000}
CONCS=${CONCS:-"1 50"}
LAT_REQUESTS=${LAT_REQUESTS:-5000}
MAX_SECONDS=${MAX_SECONDS:-60}
CLIENTS=${CLIENTS:-"raw http"}
T=$(mktemp -d "${TMPDIR:-/tmp}/mock-ceiling.XXXXXX")
MOCK_PID=

cleanup() {
	if [ -n "$MOCK_PID" ] && kill -0 "$MOCK_PID" 2>/dev/null; then
		kill "$MOCK_PID" 2>/dev/null
		wait "$MOCK_PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$NODE" "$HERE/server.js" --port 0 --port-file "$T/port" >/dev/null 2>"$T/mock.err" &
MOCK_PID=$!
for _ in $(seq 1 100); do
	[ -s "$T/port" ] && break
	sleep 0.05
done
if [ ! -s "$T/port" ]; then
	echo "mock did not start:" >&2
	cat "$T/mock.err" >&2
	exit 1
fi
PORT=$(cat "$T/port")

# run CLIENT CONC N MODEL: one load.js run; prints a table row.
run() {
	local out
	out=$("$NODE" "$HERE/load.js" --port "$PORT" --client "$1" --conc "$2" --requests "$3" \
		--model "$4" --max-seconds "$MAX_SECONDS") || return 1
	"$NODE" -e '
		const r = JSON.parse(process.argv[1]);
		const pad = (s, n) => String(s).padStart(n);
		console.log(pad(r.client, 6) + pad(r.model, 18) + pad(r.conc, 6) + pad(r.requests, 9) +
			pad(r.errors, 7) + pad(r.seconds.toFixed(2), 9) + pad(r.rps, 9) + pad(r.p50_ms.toFixed(2), 9) +
			pad(r.p99_ms.toFixed(2), 9));
	' "$out"
}

echo "mock ceiling on 127.0.0.1:$PORT ($(nproc 2>/dev/null || echo '?') CPUs; node $("$NODE" --version))"
printf '%6s%18s%6s%9s%7s%9s%9s%9s%9s\n' client model conc requests errors seconds 'req/s' 'p50 ms' 'p99 ms'
# a short warm-up so the JIT has compiled the hot path
"$NODE" "$HERE/load.js" --port "$PORT" --conc 4 --requests 2000 --max-seconds 10 >/dev/null
for client in $CLIENTS; do
	for c in $CONCS; do
		run "$client" "$c" "$REQUESTS" mock
	done
done
run raw 50 "$LAT_REQUESTS" 'mock?latency=50'
