#!/usr/bin/env bash
# The streaming client matrix: does llm.chat_stream() reach real clients
# row by row while the reply is generated, in the ways each client reads
# rows, and do their ways of cancelling stop the provider?
#
#   psql        \set FETCH_COUNT 1 (aligned and -A), without it; SIGINT
#   psycopg 3   cursor.stream(), named cursor itersize 1 (and 100),
#               cursor.copy(), execute(); conn.cancel(), break, idle
#               cancel, cursor close
#   node        pg Query row events, pg-query-stream batchSize 1 (and 100);
#               the pg cancel API, pg_cancel_backend, break
#   JDBC        setFetchSize(1) with autocommit off (and on);
#               cancelQuery(), Statement.cancel(), rs.close() + rollback
#   libpq       single-row mode; PQcancel
#   SQL shapes  function in FROM, string_agg, ORDER BY, subqueries, a
#               MATERIALIZED CTE, LIMIT
#   disconnect  a client killed mid-stream, with client_connection_check_
#               interval 0 (the check named DISCONNECT-FIX: it needs the
#               fix in src/stream.c) and 100ms
#   readme      the README's Python, JavaScript and Java snippets and its
#               psql recipes, as printed, in a database app
#
# Each check compares the time every row reached the client with the time
# the mock provider sent its chunk (GET /_trace of test/mock/server.js,
# requests of the provider 'traced' carry `x-mock-trace: 1`).  Margins are
# wide (the machine is shared): live rows within 100 ms of their chunk,
# not-live rows all after the last chunk, no chunk more than 300 ms after
# a cancel.  matrix.py holds the checks; the other files are the clients.
#
# usage: test/clients/run.sh [GROUP ...]   (libpq psql psycopg node jdbc
#                                           sql disconnect readme; default all)
#
# Does not build or install pg_llm: run it after `make install` (as
# test/run_all.sh does).  As root it installs what its clients need:
# Debian python3-psycopg, libpq-dev, default-jdk-headless and
# libpostgresql-jdbc-java (JDBC is skipped when the JDK cannot be
# installed), and the npm packages of package-lock.json (pg,
# pg-query-stream) into test/clients/node_modules.  One ok / not ok line
# per check; the last line is `clients: N passed, M failed`; the exit
# status is non-zero when a check failed.
source "$(dirname "$0")/../lib.sh"
CLIENTS_DIR="$PG_LLM_ROOT/test/clients"
PYTHON=/usr/bin/python3   # Debian's python3-psycopg is for Debian's python

# Install the Debian packages in "$@" that are missing; fails without root.
install_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages: ${missing[*]} (run as root to install them)"
    return 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A setup step failed: one not ok line and the summary.
fatal() {
  echo "not ok - $*"
  echo "clients: 0 passed, 1 failed"
  exit 1
}

install_debs python3 python3-psycopg libpq-dev gcc postgresql-client-15 ||
  fatal "the Debian packages of the clients are installed"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  install_debs nodejs npm || fatal "node and npm are installed"
fi
JDBC_SKIP=
JDBC_JAR=/usr/share/java/postgresql.jar
if ! install_debs default-jdk-headless libpostgresql-jdbc-java; then
  JDBC_SKIP="the JDK or pgjdbc could not be installed"
elif ! command -v javac >/dev/null || [ ! -f "$JDBC_JAR" ]; then
  JDBC_SKIP="javac or $JDBC_JAR is missing"
fi
[ -n "$JDBC_SKIP" ] && log "JDBC checks skipped: $JDBC_SKIP"

# node-postgres and pg-query-stream, as package-lock.json pins them
if ! (cd "$CLIENTS_DIR" && node -e "require('pg'); require('pg-query-stream')" 2>/dev/null) ||
   ! cmp -s "$CLIENTS_DIR/package-lock.json" "$CLIENTS_DIR/node_modules/.clients-lock.json"; then
  log "installing pg and pg-query-stream (npm ci)"
  (cd "$CLIENTS_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    fatal "npm ci installs pg and pg-query-stream into test/clients/node_modules"
  cp "$CLIENTS_DIR/package-lock.json" "$CLIENTS_DIR/node_modules/.clients-lock.json"
fi

start_postgres
start_mock
scratch_dir
WORK=$SCRATCH

cc -O2 -Wall -I"$(pg_config --includedir)" -o "$WORK/libpq_client" \
  "$CLIENTS_DIR/libpq_client.c" -L"$(pg_config --libdir)" -lpq ||
  fatal "libpq_client.c compiles"
JDBC_CP=
if [ -z "$JDBC_SKIP" ]; then
  if javac -d "$WORK" -cp "$JDBC_JAR" "$CLIENTS_DIR/JdbcClient.java"; then
    JDBC_CP="$WORK:$JDBC_JAR"
  else
    JDBC_SKIP="JdbcClient.java did not compile"
  fi
fi

psql -X -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION pg_llm;
SELECT llm.create_provider('traced', 'openai', 'http://127.0.0.1:$MOCK_PORT/v1', api_key => 'sk-mock',
  options => '{"headers": {"x-mock-trace": "1"}, "pass_through": true}');
SELECT llm.use_provider('traced');
SQL

log "running the client matrix"
start=$(date +%s)
status=0
CLIENTS_WORK=$WORK JDBC_CP=$JDBC_CP JDBC_SKIP=$JDBC_SKIP NODE_NO_WARNINGS=1 \
  "$PYTHON" -B "$CLIENTS_DIR/matrix.py" "$@" || status=$?
log "client matrix ran in $(( $(date +%s) - start )) s"
exit $status
