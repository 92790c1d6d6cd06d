#!/usr/bin/env bash
# Compatibility cases: pg_llm against @copilotkit/aimock, a third-party
# OpenAI/Anthropic mock server from npm (pinned in package.json), so that
# the extension is checked against a mock that is not our own.
#
#   test/compat/run.sh            run every case
#   COMPAT_ACCEPT=1 test/compat/run.sh
#                                 also copy the output over expected/compat.out
#
# The extension must be installed (make install, as root).  This script
# installs aimock into test/compat/node_modules when it is missing, starts
# a private PostgreSQL and aimock on free loopback ports (both stopped by
# PID at exit), runs compat.sql with psql and compares its output with
# expected/compat.out.  Each "-- case:" block of the output is a case; the
# last line says how many passed and failed.  Output and diff are kept in
# test/compat/results/.
source "$(dirname "$0")/../lib.sh"

COMPAT_DIR="$PG_LLM_ROOT/test/compat"
RESULTS="$COMPAT_DIR/results"
# the key aimock accepts; a provider with another key gets its 401
AIMOCK_KEY=sk-compat-aimock

# give up before any case ran: the summary line still comes last
give_up() {
  log "$*"
  echo "compat: 0 passed, 1 failed"
  exit 1
}

# aimock 1.43 wants Node.js 20.15 or later
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 15) ? 0 : 1)' ||
  give_up "aimock needs Node.js 20.15 or later; this is $(node --version)"

# aimock from npm, into test/compat/node_modules, when it is missing or
# not the version package.json pins
pinned=$(node -p "require('$COMPAT_DIR/package.json').dependencies['@copilotkit/aimock']")
installed=$(node -p "try { require('$COMPAT_DIR/node_modules/@copilotkit/aimock/package.json').version } catch (e) { '' }")
if [ "$installed" != "$pinned" ]; then
  log "installing @copilotkit/aimock $pinned"
  (cd "$COMPAT_DIR" && npm install --no-audit --no-fund --loglevel=error) >&2 ||
    give_up "npm install in test/compat failed"
fi
AIMOCK_BIN="$COMPAT_DIR/node_modules/@copilotkit/aimock/$(node -p "require('$COMPAT_DIR/node_modules/@copilotkit/aimock/package.json').bin.llmock")"

# everything from here on stays on 127.0.0.1
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1

# preloaded, as test/regress.sh starts it (the queue worker then serves
# the compat database, where nothing is queued)
start_postgres "shared_preload_libraries = 'pg_llm'" "llm.database = 'compat'" "llm.batch_poll_interval = 1"
# a UTF-8 database and client, whatever the locale: the expected output
# holds non-ASCII text and psql's column widths depend on the encoding
createdb -T template0 -E UTF8 --locale=C compat
export PGDATABASE=compat PGCLIENTENCODING=UTF8

# aimock on a free loopback port (port 0: it prints the one it took),
# with our fixtures, checking API keys, 20-character stream chunks
scratch_dir
AIMOCK_LOG="$SCRATCH/aimock.log"
AIMOCK_API_KEYS=$AIMOCK_KEY node "$AIMOCK_BIN" --host 127.0.0.1 --port 0 \
  --fixtures "$COMPAT_DIR/fixtures" --validate-on-load \
  --chunk-size 20 --latency 0 --log-level info > "$AIMOCK_LOG" 2>&1 &
PG_LLM_PIDS+=($!)
AIMOCK_PID=$!
AIMOCK_PORT=
for _ in $(seq 1 200); do
  AIMOCK_PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$AIMOCK_LOG" | head -1)
  [ -n "$AIMOCK_PORT" ] && break
  kill -0 "$AIMOCK_PID" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$AIMOCK_PORT" ]; then
  cat "$AIMOCK_LOG" >&2
  give_up "aimock did not start"
fi
# for compat.sql, which reads aimock's request journal with curl
export AIMOCK_URL="http://127.0.0.1:$AIMOCK_PORT" AIMOCK_KEY
log "aimock $pinned on port $AIMOCK_PORT"

mkdir -p "$RESULTS"
OUT="$RESULTS/compat.out"
DIFFS="$RESULTS/compat.diffs"
rm -f "$OUT" "$DIFFS"

# read from standard input, as pg_regress does, so errors carry no file
# name and line number
cd "$COMPAT_DIR"
timeout 120 psql -X -a -q -v ON_ERROR_STOP=0 \
  -v aimock_port="$AIMOCK_PORT" -v aimock_key="$AIMOCK_KEY" \
  < "$COMPAT_DIR/compat.sql" > "$OUT" 2>&1 || true

if [ "${COMPAT_ACCEPT:-0}" = 1 ]; then
  cp "$OUT" "$COMPAT_DIR/expected/compat.out"
  log "expected/compat.out updated"
fi

rc=0
diff -u "$COMPAT_DIR/expected/compat.out" "$OUT" > "$DIFFS" || rc=$?
if [ $rc -ne 0 ]; then
  log "output differs from expected/compat.out (whole diff: test/compat/results/compat.diffs):"
  head -c 20000 "$DIFFS"
  log "aimock's log:"
  tail -n 30 "$AIMOCK_LOG" >&2
else
  rm -f "$DIFFS"
fi

# count cases: the output is cut into blocks at the "-- case: NAME" lines
# (what comes before the first is the setup), and each block is compared
# with the expected block of the same name
counted=0
python3 - "$COMPAT_DIR/expected/compat.out" "$OUT" <<'EOF' || counted=$?
import sys

def blocks(path):
    out, name, lines = {}, "(setup)", []
    order = [name]
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("-- case: "):
                out[name] = lines
                name, lines = line[len("-- case: "):].strip(), []
                base, n = name, 2
                while name in out or name in order:
                    name, n = f"{base} #{n}", n + 1
                order.append(name)
            lines.append(line)
    out[name] = lines
    return out, order

want, order = blocks(sys.argv[1])
got, got_order = blocks(sys.argv[2])
passed = failed = 0
for name in order:
    if name == "(setup)":
        if want[name] != got.get(name):
            print("FAILED: setup (before the first case)")
            failed += 1
        continue
    if want[name] == got.get(name):
        passed += 1
    else:
        print(f"FAILED: {name}")
        failed += 1
for name in got_order:
    if name not in want:
        print(f"FAILED: {name} (not in expected/compat.out)")
        failed += 1
print(f"compat: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
EOF
[ $rc -eq 0 ] && [ $counted -eq 0 ]
